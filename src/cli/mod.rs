//! The `ghcache` command line: `ghcache daemon [flags]`, the operator
//! commands that ask a running daemon (`stats`, `peers`, `invalidate`),
//! `swarm-key` and `completions`.
//!
//! - One clap definition ([`Cli`]) serves parsing, `--help` and the shell
//!   completions. The daemon's flags are `daemon::flags::DaemonArgs`.
//! - The operator commands are thin: each is one `tools/call` on the
//!   daemon's `/jsonrpc` ([`client`]), printed for people ([`render`]) or,
//!   with `--json`, as the tool's JSON result.
//! - Exit codes are a contract, listed in [`EXIT_CODES`] (shown by
//!   `--help`): 0 ok; 1 the command failed (the daemon answered an error, or
//!   a local step such as writing a key file failed); 2 usage (bad flags,
//!   bad config); 3 the daemon is unreachable or refused the request
//!   (401/403: token or `Host`/`Origin`).

pub mod client;
pub mod render;
pub mod swarm_key;

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};

use crate::daemon::config::{Config, ConfigError};
use crate::daemon::flags::{self, DaemonArgs};

/// Success.
pub const EXIT_OK: i32 = 0;
/// The command failed: the daemon answered an error, or a local step did.
pub const EXIT_FAILED: i32 = 1;
/// Bad flags or a bad config file.
pub const EXIT_USAGE: i32 = 2;
/// The daemon could not be reached, or refused the request (token,
/// `Host`, `Origin`).
pub const EXIT_UNREACHABLE: i32 = 3;

/// The exit codes, as `--help` prints them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  failed: the daemon answered an error (or swarm-key could not write its file)
  2  usage: bad flags or config
  3  the daemon is unreachable, or refused the request (401/403: wrong or missing token)";

const DAEMON_AFTER_HELP: &str = "\
Every flag is also a key of the --config TOML file (--foo-bar is foo_bar); flags win over the file.
`ghcache daemon --help` lists every key; -h only the common ones.

GitHub token: GITHUB_TOKEN, else GH_TOKEN, else `gh auth token`, else unauthenticated.
MCP token (required on /mcp, /jsonrpc, /github when set): --mcp-token-file, else GHCACHE_MCP_TOKEN,
  else the systemd credential `mcp-token`, else --mcp-token.
Swarm key: --swarm-key-file, else GHCACHE_SWARM_KEY, else derived from the GitHub token.
Endpoints: POST /mcp, POST /jsonrpc, GET /github/<path>, GET /metrics, GET /healthz
Dashboard: GET / (the page), GET /api/dashboard (its data, behind the same guard as /jsonrpc)";

const CLIENT_AFTER_HELP: &str = "\
The daemon: --url, else GHCACHE_URL, else the `listen` of the config file (--config, else
$XDG_CONFIG_HOME/ghcache/ghcache.toml or ~/.config/ghcache/ghcache.toml, else
/etc/ghcache/ghcache.toml), else http://127.0.0.1:9000.
Token: --mcp-token-file, else GHCACHE_MCP_TOKEN, else the config file's mcp_token_file.

Exit codes: 0 ok, 1 the daemon answered an error, 2 usage, 3 unreachable or refused (401/403)";

/// `ghcache`: a peer-to-peer cache of GitHub API responses.
#[derive(Parser, Debug)]
#[command(
    name = "ghcache",
    version,
    about = "ghcache: a peer-to-peer cache of GitHub API responses",
    after_help = EXIT_CODES,
)]
pub struct Cli {
    /// What to do (none: print this help).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the cache daemon
    #[command(after_help = DAEMON_AFTER_HELP, args_override_self = true)]
    Daemon(Box<DaemonArgs>),
    /// A running daemon's cache statistics (tool gh_get_cache_stats)
    #[command(after_help = CLIENT_AFTER_HELP)]
    Stats(ClientArgs),
    /// A running daemon's P2P peers (tool gh_list_peers)
    #[command(after_help = CLIENT_AFTER_HELP)]
    Peers(ClientArgs),
    /// Drop cached entries: everything, one repository's, or keys with a prefix (tool gh_invalidate_cache)
    #[command(after_help = CLIENT_AFTER_HELP)]
    Invalidate(InvalidateArgs),
    /// Make a private swarm key (`/key/swarm/psk/1.0.0/` format) for --swarm-key-file
    SwarmKey(SwarmKeyArgs),
    /// Print a completion script for a shell
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// How the operator commands find and address the daemon.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The daemon's address, e.g. http://127.0.0.1:9000
    #[arg(long, env = "GHCACHE_URL", value_name = "URL")]
    pub url: Option<String>,
    /// The daemon's config file (for its `listen` and token)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A file holding the daemon's MCP token (else env GHCACHE_MCP_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub mcp_token_file: Option<PathBuf>,
    /// Print the tool's JSON result instead of text
    #[arg(long)]
    pub json: bool,
}

/// `ghcache invalidate`.
#[derive(Args, Debug, Clone)]
pub struct InvalidateArgs {
    /// Every entry of repository OWNER/NAME (every tool, /github/ paths included)
    #[arg(long, value_name = "OWNER/NAME", conflicts_with = "prefix")]
    pub repo: Option<String>,
    /// Every key that starts with P, e.g. `runners:` or `repo:repo=o/r` (an operation name alone means all its keys)
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Where the daemon is, how to ask it, how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `ghcache swarm-key`.
#[derive(Args, Debug, Clone)]
pub struct SwarmKeyArgs {
    /// Write the key to FILE (mode 0600) instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace FILE if it exists
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// What the command line asks for, once parsed.
pub enum Invocation {
    /// Run the daemon with this config (the environment not yet applied).
    Daemon {
        /// Defaults, `--config FILE`, then the flags.
        config: Box<Config>,
        /// `--mcp-token` was given on the command line (worth a warning).
        token_on_argv: bool,
    },
    /// An operator command.
    Run(Command),
    /// Nothing more to do: exit with this code (help, version, a usage
    /// error already printed).
    Exit(i32),
}

/// The whole command, as clap sees it.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses `argv` (including the program name). Prints help, the version
/// and usage errors itself.
pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Invocation {
    let mut argv: Vec<String> = argv.into_iter().collect();
    let is_daemon = argv.get(1).map(String::as_str) == Some("daemon");
    if is_daemon {
        let rest = flags::normalize(argv.split_off(2));
        argv.extend(rest);
    }
    let matches = match command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            if is_daemon && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                eprintln!("ghcache: {}", flags::config_error(&e));
                return Invocation::Exit(EXIT_USAGE);
            }
            let _ = e.print();
            return Invocation::Exit(e.exit_code());
        }
    };
    if let Some(daemon) = matches.subcommand_matches("daemon") {
        let token_on_argv = daemon.value_source("mcp_token") == Some(clap::parser::ValueSource::CommandLine);
        return match Config::from_matches(daemon) {
            Ok(config) => Invocation::Daemon {
                config: Box::new(config),
                token_on_argv,
            },
            Err(e) => {
                eprintln!("ghcache: {e}");
                Invocation::Exit(EXIT_USAGE)
            }
        };
    }
    match Cli::from_arg_matches(&matches).map(|cli| cli.command) {
        Ok(Some(cmd)) => Invocation::Run(cmd),
        Ok(None) => {
            let _ = command().print_help();
            Invocation::Exit(EXIT_OK)
        }
        Err(e) => {
            let _ = e.print();
            Invocation::Exit(EXIT_USAGE)
        }
    }
}

/// A failed command: its exit code and the line to print.
#[derive(Debug)]
pub struct Failure {
    /// One of the `EXIT_*` codes.
    pub code: i32,
    /// What went wrong (one line; never a token).
    pub message: String,
}

impl Failure {
    fn usage(e: impl std::fmt::Display) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: e.to_string(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::usage(e)
    }
}

/// Runs an operator command; returns the exit code.
pub fn run(cmd: Command) -> i32 {
    match run_inner(cmd) {
        Ok(()) => EXIT_OK,
        Err(f) => {
            eprintln!("ghcache: {}", f.message);
            f.code
        }
    }
}

fn run_inner(cmd: Command) -> Result<(), Failure> {
    use std::io::Write;
    let (args, tool, arguments): (ClientArgs, &str, Value) = match cmd {
        Command::Daemon(_) => return Err(Failure::usage("`daemon` runs through `parse`")),
        Command::Completions { shell } => {
            let mut cmd = command();
            clap_complete::generate(shell, &mut cmd, "ghcache", &mut std::io::stdout());
            return Ok(());
        }
        Command::SwarmKey(a) => return swarm_key::run(&a),
        Command::Stats(a) => (a, "gh_get_cache_stats", json!({})),
        Command::Peers(a) => (a, "gh_list_peers", json!({})),
        Command::Invalidate(a) => {
            let arguments = match (&a.repo, &a.prefix) {
                (Some(repo), _) => json!({"repo": repo}),
                (None, Some(prefix)) => json!({"pattern": prefix}),
                (None, None) => json!({}),
            };
            (a.client, "gh_invalidate_cache", arguments)
        }
    };
    let target = client::Target::resolve(&args)?;
    let result = target.call_tool(tool, arguments)?;
    let text = if args.json {
        serde_json::to_string_pretty(&result).unwrap_or_default()
    } else {
        match tool {
            "gh_get_cache_stats" => render::stats(&result),
            "gh_list_peers" => render::peers(&result),
            _ => render::invalidated(&result),
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", text.trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn invalidate_takes_repo_or_prefix_not_both() {
        let e = command()
            .try_get_matches_from(["ghcache", "invalidate", "--repo", "o/r", "--prefix", "x"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
