//! `bulkhead-sysdesc`: check system descriptions or print their resolved model.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use bulkhead_sysdesc::{Programs, check_file, stderr_wants_color};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(version, about = "Parse and validate Bulkhead system descriptions")]
struct Cli {
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    /// Known program names (comma-separated), without configuration schemas. Without it and
    /// without `--root`, the programs and their `config-schema.toml` files are read from the
    /// repository around the current directory, if there is one; outside a repository neither
    /// program names nor settings are checked.
    #[arg(long, value_delimiter = ',', global = true)]
    programs: Option<Vec<String>>,
    /// The repository whose `partitions/` and `servers/` hold the programs and their schemas.
    #[arg(long, global = true, conflicts_with = "programs")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Validate descriptions; print every diagnostic and exit non-zero on any error.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate one description and print its resolved model as JSON.
    Dump { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Auto => stderr_wants_color(),
        Color::Always => true,
        Color::Never => false,
    };
    let root = cli.root.or_else(|| {
        let cwd = std::env::current_dir().ok()?;
        cwd.ancestors()
            .find(|d| d.join("partitions").is_dir() && d.join("servers").is_dir())
            .map(PathBuf::from)
    });
    let programs = match (cli.programs, root) {
        (Some(names), _) => Programs::known(names),
        (None, Some(root)) => match Programs::discover(&root) {
            Ok(programs) => programs,
            Err(reports) => {
                for report in reports {
                    eprint!("{}", report.render(color));
                }
                return ExitCode::FAILURE;
            }
        },
        (None, None) => Programs::unchecked(),
    };
    let (files, dump) = match cli.command {
        Command::Check { files } => (files, false),
        Command::Dump { file } => (vec![file], true),
    };
    let mut failed = false;
    for file in &files {
        let outcome = match check_file(file, &programs) {
            Ok(outcome) => outcome,
            Err(e) => {
                eprintln!("{}: error: cannot read: {e}", file.display());
                failed = true;
                continue;
            }
        };
        eprint!("{}", outcome.report.render(color));
        match outcome.system {
            Some(system) if dump => match serde_json::to_string_pretty(&system) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("{}: error: cannot serialise: {e}", file.display());
                    failed = true;
                }
            },
            Some(system) => println!(
                "{}: ok ({} partitions, {} windows, {} devices)",
                file.display(),
                system.partitions.len(),
                system.schedule.windows.len(),
                system.devices.len()
            ),
            None => failed = true,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
