//! `ghcache`: the command-line entry point.

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--version" | "-V") => println!("ghcache {}", env!("CARGO_PKG_VERSION")),
        None | Some("--help" | "-h") => print!("{}", USAGE),
        Some(other) => {
            eprintln!("ghcache: unknown command {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

const USAGE: &str = "\
ghcache: a peer-to-peer cache of GitHub API responses

Usage: ghcache <command>

Commands:
  --version   print the version
  --help      print this help
";
