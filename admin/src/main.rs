//! `imgpipe-admin`: operator commands, run from a workstation or CI against the deployment's MongoDB.
//!
//! ```text
//! imgpipe-admin migrate [--assign-tenant T]   # indexes; documents written before tenancy become T's
//! imgpipe-admin tenant add T                  # a tenant whose files may be dropped under incoming/T/
//! imgpipe-admin tenant set T --max-open-requests 10 [--max-images-per-request N] [--max-queued-images N]
//! imgpipe-admin tenant set T --default        # back to the deployment's quotas (IMGPIPE_MAX_*)
//! imgpipe-admin tenant show T                 # its quotas and what it has running
//! ```
//!
//! The connection string and database come from `IMGPIPE_MONGODB_URI` and `IMGPIPE_MONGODB_DATABASE` (default
//! `imgpipe`), as for the functions. Run `migrate` before the first deploy and after every upgrade: no function
//! creates indexes itself (a cold start must not run DDL, and a changed index would fail it).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imgpipe_core::adapters::mongo::{IndexChange, MongoStore, assign_tenant, migrate};
use imgpipe_core::auth::TenantId;
use imgpipe_core::config::Secret;
use imgpipe_core::domain::{QuotaOverrides, Timestamp};
use imgpipe_core::ports::TenantStore;

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
    /// Create every declared index that is missing; replace those whose definition changed; drop indexes no
    /// query uses. Idempotent.
    Migrate {
        /// Give documents written before tenancy (no `tenantId`) to this tenant first, so the tenant-leading
        /// indexes and queries find them.
        #[arg(long, value_parser = parse_tenant)]
        assign_tenant: Option<TenantId>,
    },
    /// Tenants and their quotas.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Register a tenant (API callers are registered by their first upload; a tenant that only drops files
    /// into the bucket must be registered here).
    Add {
        #[arg(value_parser = parse_tenant)]
        tenant: TenantId,
    },
    /// Override quotas of a tenant; the ones not given keep their current value.
    Set {
        #[arg(value_parser = parse_tenant)]
        tenant: TenantId,
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        max_images_per_request: Option<i64>,
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        max_open_requests: Option<i64>,
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        max_queued_images: Option<i64>,
        /// Remove every override: the deployment's defaults apply again.
        #[arg(long, conflicts_with_all = ["max_images_per_request", "max_open_requests", "max_queued_images"])]
        default: bool,
    },
    /// A tenant's quota overrides and its open requests.
    Show {
        #[arg(value_parser = parse_tenant)]
        tenant: TenantId,
    },
}

fn parse_tenant(s: &str) -> Result<TenantId, String> {
    TenantId::parse(s).map_err(|e| e.to_string())
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
        Command::Migrate { assign_tenant: tenant } => {
            if let Some(tenant) = tenant {
                for (collection, n) in assign_tenant(store.database(), &tenant).await? {
                    println!("assigned  {collection}: {n} documents to {tenant}");
                }
            }
            for change in migrate(store.database()).await? {
                match change {
                    IndexChange::Created { collection, name } => println!("created   {collection}.{name}"),
                    IndexChange::Replaced { collection, name, old } => {
                        println!("replaced  {collection}.{old} -> {name}")
                    }
                    IndexChange::Unchanged { collection, name } => println!("unchanged {collection}.{name}"),
                    IndexChange::Dropped { collection, name } => println!("dropped   {collection}.{name}"),
                }
            }
        }
        Command::Tenant { command: TenantCommand::Add { tenant } } => {
            let new = store.register_tenant(&tenant, Timestamp::now()).await?;
            println!("{tenant}: {}", if new { "registered" } else { "already registered" });
        }
        Command::Tenant {
            command:
                TenantCommand::Set { tenant, max_images_per_request, max_open_requests, max_queued_images, default },
        } => {
            let current = store.get_tenant(&tenant).await?.map(|t| t.quotas).unwrap_or_default();
            let quotas = if default {
                QuotaOverrides::default()
            } else {
                QuotaOverrides {
                    max_images_per_request: max_images_per_request.or(current.max_images_per_request),
                    max_open_requests: max_open_requests.or(current.max_open_requests),
                    max_queued_images: max_queued_images.or(current.max_queued_images),
                }
            };
            store.set_quotas(&tenant, &quotas, Timestamp::now()).await?;
            print_quotas(&tenant, &quotas);
        }
        Command::Tenant { command: TenantCommand::Show { tenant } } => {
            let Some(found) = store.get_tenant(&tenant).await? else {
                return Err(imgpipe_core::Error::BadRequest(format!("tenant {tenant} is not registered")));
            };
            print_quotas(&tenant, &found.quotas);
            let usage = store.usage(&tenant).await?;
            println!("open requests  {}", usage.open_requests);
            println!("queued images  {}", usage.queued_images);
        }
    }
    Ok(())
}

fn print_quotas(tenant: &TenantId, quotas: &QuotaOverrides) {
    let show = |v: Option<i64>| v.map_or_else(|| "default".to_string(), |n| n.to_string());
    println!("tenant {tenant}");
    println!("max-images-per-request  {}", show(quotas.max_images_per_request));
    println!("max-open-requests       {}", show(quotas.max_open_requests));
    println!("max-queued-images       {}", show(quotas.max_queued_images));
}
