//! A small, fast, unkeyed hasher for the matcher's lookup tables.
//!
//! `std`'s SipHash is keyed to resist hash flooding, which matters when an attacker chooses
//! the keys *inserted* into a table. The matcher's tables are built from admin-written policy
//! files; request hosts are only looked up, and a lookup probes one bucket group whatever the
//! key. So flooding is not a concern here, and a multiply-xorshift hash (murmur3's `fmix64`
//! finalizer over 8-byte words) makes the per-prefix-length CIDR walk several times cheaper.
//! The finalizer matters: masked networks have all-zero low bits, which a bare multiply would
//! leave in the bucket index.

use std::hash::{BuildHasher, Hasher};

/// Builds [`FastHasher`]s; the `S` parameter of the matcher's `HashMap`s.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64: every input bit affects every output bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash<T: std::hash::Hash>(t: T) -> u64 {
        FastHash.hash_one(t)
    }

    #[test]
    fn distinguishes_close_keys() {
        assert_ne!(hash("ab"), hash("ab\0"));
        assert_ne!(hash("example.com"), hash("example.org"));
        assert_ne!(hash(0x0a00_0000u32), hash(0x0b00_0000u32));
        assert_ne!(hash(1u128 << 64), hash(1u128));
    }

    #[test]
    fn masked_networks_spread_over_low_bits() {
        // /24 networks: the low 8 bits of the key are always zero.
        let buckets: std::collections::HashSet<u64> =
            (0u32..1024).map(|i| hash(i << 8) & 1023).collect();
        assert!(
            buckets.len() > 500,
            "only {} distinct buckets",
            buckets.len()
        );
    }
}
