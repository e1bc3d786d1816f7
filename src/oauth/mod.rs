//! Outbound applications (OAuth 2.0 clients configured by an org's admins): their validated
//! configuration now; the consent flow, token exchange, refresh and injection build on it.

pub mod app;
