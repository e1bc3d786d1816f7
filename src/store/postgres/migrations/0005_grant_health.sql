-- tollgate store, version 5: a grant's record (`tokens.rec`) may carry a `health` object
-- (state, last error, refresh and use times; never a secret) in the clear next to its sealed
-- tokens. No column changes: the version exists so that builds that cannot read that object
-- refuse to start on this database ("schema newer than this build") instead of reporting
-- each grant as corrupt.
COMMENT ON COLUMN tokens.rec IS
    'versioned JSON grant record: tokens sealed, health (state, times, last error) in the clear';
