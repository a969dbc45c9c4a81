//! The control API under `/_emulator/` (no auth), and its typed client.

pub(crate) mod client;
mod server;
pub(crate) mod types;

pub(crate) use server::routes;
