//! `tenantd`: the server and the operator CLI.
#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tenantd::cli::{KeyCmd, Remote, TenantCmd};
use tenantd::config::{Config, ServeArgs};

/// mimalloc: the proxy allocates and frees small buffers on every request, and glibc's
/// allocator spent about 7% of the gateway's CPU doing it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Multi-tenancy as one binary: tenants, identity, access, quotas and isolation.
#[derive(Debug, Parser)]
#[command(name = "tenantd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server.
    Serve(ServeArgs),
    /// Applies catalog migrations and exits; with --tenants, also every tenant's data
    /// schema or database.
    Migrate {
        #[command(flatten)]
        args: ServeArgs,
        /// Also migrate every tenant's schema or database (resumable: run it again after
        /// a crash and it carries on).
        #[arg(long)]
        tenants: bool,
        /// How many tenants to migrate at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Operator commands on tenants (calls a running server).
    Tenant {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// Operator commands on API keys (calls a running server).
    Key {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Checks the event log's hash chains in the catalog, or in an exported file.
    Audit {
        #[command(subcommand)]
        cmd: tenantd::cli_audit::AuditCmd,
    },
    /// Exports a tenant's data to a .tar.gz file (calls a running server).
    Export {
        #[command(flatten)]
        remote: Remote,
        /// Tenant id.
        tenant: String,
        /// Where to write the archive.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Backs a tenant up, sealed under its data key (calls a running server).
    Backup {
        #[command(flatten)]
        remote: Remote,
        /// Tenant id.
        tenant: String,
    },
    /// Replaces a tenant's data with one of its backups (calls a running server).
    Restore {
        #[command(flatten)]
        remote: Remote,
        /// Tenant id.
        tenant: String,
        /// The backup's id (bak_…).
        #[arg(long)]
        backup: String,
    },
    /// Makes a new tenant from a backup of this one (calls a running server).
    Clone {
        #[command(flatten)]
        remote: Remote,
        /// The tenant to clone.
        tenant: String,
        /// The new tenant's id.
        new_id: String,
        /// Its plan (default: the source's).
        #[arg(long)]
        plan: Option<String>,
        /// The backup to clone from (default: a new one, made first).
        #[arg(long)]
        backup: Option<String>,
    },
    /// The master key: rotate (works on the catalog, with the servers stopped).
    MasterKey {
        #[command(subcommand)]
        cmd: tenantd::cli_keys::MasterKeyCmd,
    },
    /// Feature flags: set, get, list, delete (calls a running server).
    Flag {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: tenantd::cli_settings::FlagCmd,
    },
    /// A tenant's configuration: get, set (calls a running server).
    Config {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        cmd: tenantd::cli_settings::ConfigCmd,
    },
    /// Prints a tenant's quota table (calls a running server).
    Usage {
        #[command(flatten)]
        remote: Remote,
        /// Tenant id.
        tenant: String,
    },
}

/// Start-up failures: one line on stderr, exit code 2.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tenantd: {msg}");
    ExitCode::from(2)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    tenantd::telemetry::init(&cfg.log_format, &cfg.log);
    let mut cfg = cfg;
    cfg.server = tenantd::conn::fit_to_fd_limit(cfg.server, 1 + u64::from(cfg.gateway_listen.is_some()));
    let listener = match tenantd::startup::bind(&cfg.listen).await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let state = match tenantd::startup::prepare(cfg).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match tenantd::serve::serve(state, listener, tenantd::serve::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenantd: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(args: ServeArgs, tenants: bool, concurrency: usize) -> ExitCode {
    let cfg = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = tenantd::startup::open_catalog(&cfg).await {
        return fail(e);
    }
    eprintln!("tenantd: catalog migrated");
    if !tenants {
        return ExitCode::SUCCESS;
    }
    // Migrations move no values: no keys needed.
    let data = match tenantd::startup::open_data(&cfg, None).await {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let started = std::time::Instant::now();
    let step = std::sync::atomic::AtomicUsize::new(0);
    let report = data
        .migrate_all(concurrency, |done, total, name, r| {
            if let Err(e) = r {
                eprintln!("tenantd: {name}: {e}");
            }
            // A line per 5% (and the last), not per tenant.
            let pct = done * 20 / total.max(1);
            if pct > step.load(std::sync::atomic::Ordering::Relaxed) || done == total {
                step.store(pct, std::sync::atomic::Ordering::Relaxed);
                eprintln!("tenantd: migrated {done}/{total} data locations");
            }
        })
        .await;
    match report {
        Ok(r) if r.failed.is_empty() => {
            eprintln!(
                "tenantd: tenant data migrated: {} locations, {} migrations applied, in {:.1} s",
                r.locations,
                r.applied,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(r) => fail(format!(
            "{} of {} data locations failed to migrate (run again to retry them)",
            r.failed.len(),
            r.locations
        )),
        Err(e) => fail(format!("tenant data: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async {
        let run = |r: anyhow::Result<()>| match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tenantd: {e:#}");
                ExitCode::FAILURE
            }
        };
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Audit { cmd } => tenantd::cli_audit::run(cmd).await,
            Command::Migrate {
                args,
                tenants,
                concurrency,
            } => migrate(args, tenants, concurrency).await,
            Command::Tenant { remote, cmd } => run(tenantd::cli::tenant(&remote, cmd).await),
            Command::Key { remote, cmd } => run(tenantd::cli::key(&remote, cmd).await),
            Command::MasterKey { cmd } => match tenantd::cli_keys::run(cmd).await {
                Ok(done) => {
                    eprintln!("tenantd: {done}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("{e:#}")),
            },
            Command::Export { remote, tenant, out } => run(tenantd::cli_archives::export(&remote, &tenant, &out).await),
            Command::Backup { remote, tenant } => run(tenantd::cli_archives::backup(&remote, &tenant).await),
            Command::Restore { remote, tenant, backup } => {
                run(tenantd::cli_archives::restore(&remote, &tenant, &backup).await)
            }
            Command::Clone {
                remote,
                tenant,
                new_id,
                plan,
                backup,
            } => run(tenantd::cli_archives::clone(&remote, &tenant, &new_id, plan.as_deref(), backup.as_deref()).await),
            Command::Flag { remote, cmd } => run(tenantd::cli_settings::flag(&remote, cmd).await),
            Command::Config { remote, cmd } => run(tenantd::cli_settings::config(&remote, cmd).await),
            Command::Usage { remote, tenant } => run(tenantd::cli::usage(&remote, &tenant).await),
        }
    })
}
