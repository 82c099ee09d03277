//! One module per subcommand of `hashkv`.

pub mod admin;
pub mod bench;
pub mod compare;
pub mod crashtest;
pub mod devbench;
pub mod explain;
pub mod kv;
pub mod soak;
pub mod store;
pub mod stress;
