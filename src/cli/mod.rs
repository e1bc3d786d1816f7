//! Command-line glue that talks to a running server (anyhow is fine here, as in `main`).

pub mod app;
