//! Arguments of every subcommand and the glue that runs them: read files,
//! call `kiln-profile`, hand the result to `render`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_profile::{DecodeOptions, Filter, Merger, Profile};

use crate::render;

/// Kiln: continuous profiling. These commands read profile files — pprof
/// (raw or gzipped), JFR and folded stacks, recognised by content.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Functions by self value, with the Pareto-80% set marked.
    Top(TopArgs),
    /// Draw an SVG flame graph.
    Flamegraph(FlamegraphArgs),
    /// Compare two profiles: what grew and what shrank.
    Diff(DiffArgs),
    /// Convert a profile to pprof, folded stacks or JSON.
    Convert(ConvertArgs),
    /// Merge profiles into one gzipped pprof (as `go tool pprof -proto`).
    Merge(MergeArgs),
    /// Send profile files to a Kiln or Pyroscope server (Connect push API).
    Push(PushArgs),
    /// Run the Kiln server: ingest, storage, query API.
    Server(ServerArgs),
    /// Query a Kiln server: top table, flame graph or merged pprof.
    Query(QueryArgs),
    /// A server and a small sample service profiling itself into it: see
    /// live data in the web UI with one command.
    Demo(DemoArgs),
    /// The demo's sample service (started by `kiln demo`).
    #[command(hide = true)]
    DemoService(DemoServiceArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:4040")]
    listen: String,
    /// Where the demo's profiles are stored (default: a `kiln-demo`
    /// directory in the system's temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DemoServiceArgs {
    /// The server to push to.
    #[arg(long)]
    push: String,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:4040")]
    listen: String,
    /// Where profiles are stored (default: the config file's `data_dir`,
    /// else `./kiln-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Object storage for blocks: `s3://bucket/prefix` (credentials and
    /// endpoint from the AWS_* variables) or `file:///path`. Default:
    /// DATA_DIR/blocks.
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// Configuration file (TOML): data_dir, [limits], [tenants.NAME]
    /// tokens (see docs/api.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not profile the server itself.
    #[arg(long)]
    no_self_profile: bool,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// `TYPE{selector}`, e.g. `process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout"}`.
    query: String,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:4040")]
    server: String,
    /// Start of the range: `now-1h`, Unix seconds or milliseconds.
    #[arg(long, default_value = "now-1h")]
    from: String,
    /// End of the range.
    #[arg(long, default_value = "now")]
    until: String,
    /// Print the top table (the default).
    #[arg(long)]
    top: bool,
    /// Print the tasks table of the selection (`{selector}`; any type is
    /// ignored): rate, p50/p99/p999, CPU, I/O per kind, other, stuck.
    #[arg(long)]
    tasks: bool,
    /// Write an SVG flame graph here.
    #[arg(long, value_name = "FILE")]
    flamegraph: Option<PathBuf>,
    /// Write the merged profile (gzipped pprof) here.
    #[arg(long, value_name = "FILE")]
    pprof: Option<PathBuf>,
    /// Rows of the top table (0: all).
    #[arg(short = 'n', default_value_t = 20)]
    n: usize,
    /// Output format of the top table.
    #[arg(long, value_enum, default_value_t = TableFormat::Text)]
    format: TableFormat,
    /// Tenant, sent as `X-Scope-OrgID`.
    #[arg(long)]
    tenant: Option<String>,
}

/// How input files are read and filtered; shared by every command.
#[derive(Debug, Args)]
struct Input {
    /// Sample type: a name (`cpu`, `alloc_space`), `type:unit`, or a
    /// Pyroscope profile type ID. Default: the CPU type, else the file's
    /// default sample type, else its last.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    ty: Option<String>,
    /// Keep only samples with a frame matching this regex.
    #[arg(long, value_name = "REGEX")]
    focus: Option<String>,
    /// Drop samples with a frame matching this regex.
    #[arg(long, value_name = "REGEX")]
    ignore: Option<String>,
    /// Keep only samples with this label (repeatable), e.g. `thread_name=main`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Folded input: the first frame of each line is the thread name.
    #[arg(long)]
    thread_prefix: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TableFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Profile files; several are merged.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    input: Input,
    /// Rows to show (0: all).
    #[arg(short = 'n', default_value_t = 20)]
    n: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Text)]
    format: TableFormat,
    /// Also show totals grouped by this label (e.g. `thread_pool`).
    #[arg(long, value_name = "LABEL")]
    group_by: Option<String>,
}

#[derive(Debug, Args)]
struct FlamegraphArgs {
    /// Profile files; several are merged.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    input: Input,
    /// Where to write the SVG.
    #[arg(short, long)]
    output: PathBuf,
    /// Title of the graph. Default: the sample type.
    #[arg(long)]
    title: Option<String>,
    /// Most nodes to draw; the smallest fold into `other` (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_nodes: usize,
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The baseline profile.
    base: PathBuf,
    /// The profile to compare with it.
    new: PathBuf,
    #[command(flatten)]
    input: Input,
    /// Also write a differential flame graph (red grew, blue shrank).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Output format of the table.
    #[arg(long, value_enum, default_value_t = TableFormat::Text)]
    format: TableFormat,
    /// Rows to show (0: all).
    #[arg(short = 'n', default_value_t = 20)]
    n: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum To {
    Pprof,
    Folded,
    Json,
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// Input profile.
    input_file: PathBuf,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Output format (pprof is written gzipped).
    #[arg(long, value_enum, default_value_t = To::Pprof)]
    to: To,
    #[command(flatten)]
    input: Input,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Profile files; all must share sample types unless `--type` picks one.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Output file (gzipped pprof).
    #[arg(short, long)]
    output: PathBuf,
    /// Keep only this sample type of every file (see `kiln top --help`).
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    ty: Option<String>,
    /// Threads decoding input files (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// Profile files (pprof, JFR, folded); each is sent as it is, split by
    /// kind (CPU, wall, memory, mutex).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The server's base URL, e.g. `http://127.0.0.1:4040`.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The `service_name` label.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// Another label (repeatable), e.g. `region=eu-west-1`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Tenant, sent as `X-Scope-OrgID`.
    #[arg(long)]
    tenant: Option<String>,
    /// Bearer token for the server (default: `KILN_TOKEN`).
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Folded input: the first frame of each line is the thread name.
    #[arg(long)]
    thread_prefix: bool,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Top(a) => {
            let (p, ty) = load(&a.files, &a.input)?;
            let top = kiln_profile::top(&p, ty)?;
            let groups = match &a.group_by {
                Some(label) => Some((label.as_str(), kiln_profile::group_by_label(&p, ty, label)?)),
                None => None,
            };
            let out = match a.format {
                TableFormat::Text => {
                    render::top_text(&top, a.n, groups.as_ref().map(|(l, g)| (*l, g.as_slice())))
                }
                TableFormat::Json => {
                    render::top_json(&top, a.n, groups.as_ref().map(|(l, g)| (*l, g.as_slice())))?
                }
            };
            print!("{out}");
        }
        Command::Flamegraph(a) => {
            let (p, ty) = load(&a.files, &a.input)?;
            let tree = kiln_profile::flame_tree(&p, ty, a.max_nodes)?;
            let title = a
                .title
                .unwrap_or_else(|| format!("{} ({})", tree.ty, tree.unit));
            let svg = render::flamegraph_svg(&tree.folded(), &title, &tree.unit, false)?;
            write(&a.output, &svg)?;
        }
        Command::Diff(a) => {
            let (base, bt) = load(std::slice::from_ref(&a.base), &a.input)?;
            let (new, nt) = load(std::slice::from_ref(&a.new), &a.input)?;
            let d = kiln_profile::diff(&base, bt, &new, nt)?;
            if let Some(out) = &a.output {
                let title = format!(
                    "{} ({}): {} → {}",
                    d.ty,
                    d.unit,
                    a.base.display(),
                    a.new.display()
                );
                let svg = render::flamegraph_svg(&d.differential_folded(), &title, &d.unit, true)?;
                write(out, &svg)?;
            }
            let out = match a.format {
                TableFormat::Text => render::diff_text(&d, a.n),
                TableFormat::Json => render::diff_json(&d, a.n)?,
            };
            print!("{out}");
        }
        Command::Convert(a) => {
            let p = read(&a.input_file, &a.input)?;
            let p = apply_filter(p, &a.input)?;
            let bytes = match a.to {
                To::Pprof => kiln_profile::pprof::encode_gzip(&p),
                To::Folded => {
                    let ty = choose_type(&p, &a.input_file, a.input.ty.as_deref())?;
                    kiln_profile::folded::encode(&p, ty, a.input.thread_prefix).into_bytes()
                }
                To::Json => render::profile_json(&p)?,
            };
            write(&a.output, &bytes)?;
        }
        Command::Merge(a) => {
            let jobs = a
                .jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let merged = crate::merge::merge_files(&a.files, a.ty.as_deref(), jobs)?;
            write(&a.output, &kiln_profile::pprof::encode_gzip(&merged))?;
        }
        Command::Push(a) => push(a)?,
        Command::Server(a) => crate::server::run(
            &a.listen,
            a.data_dir.as_deref(),
            a.storage.as_deref(),
            a.config.as_deref(),
            !a.no_self_profile,
        )?,
        Command::Demo(a) => crate::demo::run(&a.listen, a.data_dir.as_deref())?,
        Command::DemoService(a) => crate::demo::service(&a.push)?,
        Command::Query(a) => {
            let q = crate::server::QueryRequest {
                server: &a.server,
                query: &a.query,
                from: &a.from,
                until: &a.until,
                tenant: a.tenant.as_deref(),
            };
            let mut wrote = false;
            if a.tasks {
                let body = q.get_bytes("/api/v1/tasks")?;
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                match a.format {
                    TableFormat::Text => print!("{}", render::tasks_text(&v, a.n)),
                    TableFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                }
                return Ok(());
            }
            if let Some(f) = &a.pprof {
                write(f, &q.get_bytes("/api/v1/pprof")?)?;
                wrote = true;
            }
            if let Some(f) = &a.flamegraph {
                let bytes = q.get_bytes("/api/v1/pprof")?;
                let p = kiln_profile::decode(&bytes, &DecodeOptions::default())?;
                let ty = choose_type(&p, Path::new("query result"), None)?;
                let tree = kiln_profile::flame_tree(&p, ty, 0)?;
                let svg = render::flamegraph_svg(
                    &tree.folded(),
                    &format!("{} ({})", a.query, tree.unit),
                    &tree.unit,
                    false,
                )?;
                write(f, &svg)?;
                wrote = true;
            }
            if a.top || !wrote {
                let bytes = q.get_bytes("/api/v1/pprof")?;
                let p = kiln_profile::decode(&bytes, &DecodeOptions::default())?;
                let ty = choose_type(&p, Path::new("query result"), None)?;
                let top = kiln_profile::top(&p, ty)?;
                let out = match a.format {
                    TableFormat::Text => render::top_text(&top, a.n, None),
                    TableFormat::Json => render::top_json(&top, a.n, None)?,
                };
                print!("{out}");
            }
        }
    }
    Ok(())
}

fn push(a: PushArgs) -> Result<()> {
    let mut labels = vec![("service_name".to_string(), a.service.clone())];
    for l in &a.labels {
        let Some((k, v)) = l.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            bail!("--label {l:?}: expected KEY=VALUE");
        };
        labels.push((k.trim().to_string(), v.trim().to_string()));
    }
    let client = kiln_agent::push::PushClient::new(&a.server, std::time::Duration::from_secs(30))?
        .tenant(a.tenant.clone())
        .token(a.token.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client")?;
    for path in &a.files {
        let p = read_file(path, a.thread_prefix)?;
        let req = kiln_profile::push::request_for(&p, &labels);
        if req.series.is_empty() {
            bail!("{}: the profile has no sample types", path.display());
        }
        rt.block_on(client.push(&req))
            .with_context(|| format!("pushing {}", path.display()))?;
        let names: Vec<&str> = req
            .series
            .iter()
            .filter_map(|s| s.labels.first().map(|l| l.value.as_str()))
            .collect();
        println!("{}: pushed {}", path.display(), names.join(", "));
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads and decodes one file; errors name it.
pub fn read_file(path: &Path, thread_prefix: bool) -> Result<Profile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut opts = DecodeOptions::default();
    opts.folded.thread_prefix = thread_prefix;
    kiln_profile::decode(&bytes, &opts).with_context(|| format!("{}", path.display()))
}

fn read(path: &Path, input: &Input) -> Result<Profile> {
    read_file(path, input.thread_prefix)
}

/// The sample type `wanted` names, or the default one; errors name the file.
pub fn choose_type(p: &Profile, path: &Path, wanted: Option<&str>) -> Result<usize> {
    let found = match wanted {
        Some(t) => p.sample_type_index(t),
        None => p.default_type_index(),
    };
    match found {
        Some(i) => Ok(i),
        None if p.sample_types.is_empty() => {
            bail!("{}: the profile has no sample types", path.display())
        }
        None => bail!(
            "{}: no sample type {:?}; it has {}",
            path.display(),
            wanted.unwrap_or(""),
            kiln_profile::type_list(p)
        ),
    }
}

fn apply_filter(p: Profile, input: &Input) -> Result<Profile> {
    if input.focus.is_none() && input.ignore.is_none() && input.labels.is_empty() {
        return Ok(p);
    }
    let mut f = Filter::default();
    f.focus = input.focus.as_deref().map(Filter::regex).transpose()?;
    f.ignore = input.ignore.as_deref().map(Filter::regex).transpose()?;
    for l in &input.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected KEY=VALUE");
        };
        f.keep_labels.push((k.to_string(), v.to_string()));
    }
    Ok(kiln_profile::filter(&p, &f))
}

/// Reads every file, keeps the chosen sample type of each, and merges them.
/// Without `--type`, the first file's choice names the type the others must
/// have too.
fn load(files: &[PathBuf], input: &Input) -> Result<(Profile, usize)> {
    let mut merger = Merger::new();
    let mut wanted = input.ty.clone();
    for path in files {
        let p = read(path, input)?;
        let ty = choose_type(&p, path, wanted.as_deref())?;
        if wanted.is_none() {
            let (t, u) = p.sample_type_names(ty);
            wanted = Some(format!("{t}:{u}"));
        }
        let one = kiln_profile::select_type(&p, ty);
        drop(p);
        merger
            .add(&one)
            .with_context(|| format!("{}", path.display()))?;
    }
    let merged = merger.finish();
    let merged = apply_filter(merged, input)?;
    Ok((merged, 0))
}
