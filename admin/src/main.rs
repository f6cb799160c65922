//! `imgpipe-admin`: operator commands, run from a workstation or CI against the deployment's MongoDB.
//!
//! ```text
//! imgpipe-admin migrate    # create the indexes the queries need; replace any whose definition changed
//! ```
//!
//! The connection string and database come from `IMGPIPE_MONGODB_URI` and `IMGPIPE_MONGODB_DATABASE` (default
//! `imgpipe`), as for the functions. Run `migrate` before the first deploy and after every upgrade: no function
//! creates indexes itself (a cold start must not run DDL, and a changed index would fail it).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imgpipe_core::adapters::mongo::{IndexChange, MongoStore, migrate};
use imgpipe_core::config::Secret;

#[derive(Parser)]
#[command(name = "imgpipe-admin", version, about = "imgpipe operator commands")]
struct Cli {
    /// MongoDB connection string.
    #[arg(long, env = "IMGPIPE_MONGODB_URI", hide_env_values = true)]
    mongodb_uri: String,
    #[arg(long, env = "IMGPIPE_MONGODB_DATABASE", default_value = "imgpipe")]
    mongodb_database: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create every declared index that is missing; replace those whose definition changed. Idempotent.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let uri = Secret::new(cli.mongodb_uri);
    match run(&uri, &cli.mongodb_database, cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgpipe-admin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(uri: &Secret, database: &str, command: Command) -> imgpipe_core::Result<()> {
    let (_client, store) = MongoStore::connect(uri.expose(), database).await?;
    match command {
        Command::Migrate => {
            for change in migrate(store.database()).await? {
                match change {
                    IndexChange::Created { collection, name } => println!("created   {collection}.{name}"),
                    IndexChange::Replaced { collection, name, old } => {
                        println!("replaced  {collection}.{old} -> {name}")
                    }
                    IndexChange::Unchanged { collection, name } => println!("unchanged {collection}.{name}"),
                }
            }
            Ok(())
        }
    }
}
