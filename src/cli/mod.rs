//! The subcommands of the `callpipe` command, each with its options and what it does: `serve`,
//! and the emulator's `call` and `load` (with the options they share). `main.rs` parses the
//! command line and hands each subcommand its options.

mod call;
mod call_args;
mod load;
mod serve;

pub use call::CallCommand;
pub use load::LoadCommand;
pub use serve::ServeCommand;
