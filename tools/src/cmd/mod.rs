//! One module per subcommand of `hashkv`.

pub mod devbench;
