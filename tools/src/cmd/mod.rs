//! One module per subcommand of `hashkv`.

pub mod bench;
pub mod compare;
pub mod devbench;
pub mod kv;
pub mod store;
