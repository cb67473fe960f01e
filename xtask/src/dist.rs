//! `cargo xtask dist`: the packages each ecosystem installs, for this platform (Linux x86-64,
//! glibc), built from the checkout and checked by installing them where there is no Rust.
//!
//! ```text
//! dist/
//!   npm/tether-session-<v>.tgz                     main package (JS, types, loader)
//!   npm/tether-session-linux-x64-gnu-<v>.tgz       prebuilt addon, selected through
//!                                                  the main package's optionalDependencies
//!   python/tether_session-<v>-cp39-abi3-manylinux_2_34_x86_64.whl
//!   python/tether_session-<v>.tar.gz               sdist (builds from source anywhere)
//!   maven/io/tether/tether/<v>/                    a Maven repository: jar (with
//!                                                  linux-x86-64/libtether_uniffi.so), sources
//!                                                  jar, POM declaring JNA and kotlin-stdlib
//!   c/tether-c-<v>-linux-x86_64.tar.gz             include/, lib/ (.so, .a), lib/pkgconfig
//!   dotnet/Tether.Client.<v>.nupkg                 lib/net461/Tether.dll +
//!   dotnet/Tether.Client.<v>/                      runtimes/linux-x64/native/libtether_ffi.so
//!   swift/tether-swift-<v>.tar.gz                  the SwiftPM package (not compiled here)
//!   SHA256SUMS
//! ```
//!
//! Every version comes from the workspace's (`[workspace.package] version` in Cargo.toml); the
//! checked-in manifests that state one must agree with it (checked here and by a unit test).
//! Native libraries are copied without their debug info (`strip --strip-debug`).
//!
//! The check ([`check`]) installs every artefact into fresh temporary directories with an
//! environment that has no cargo or rustc on `PATH` (and a temporary `HOME`), then runs a
//! short program in each language against the real server (embedded here) through the fault
//! proxy: it makes a round trip, the proxy cuts its connection, and the same session must
//! resume and make a second round trip. `cargo xtask dist` builds (release) and checks;
//! `cargo xtask test` runs the same with the debug profile into `target/dist-debug`
//! ([`suite`]).
//!
//! Cost on this 2-core machine: the checks take about 30 s (most of it building the sdist);
//! the debug build about 2 minutes once `cargo xtask test`'s suites have built the native
//! libraries (maturin, the Kotlin compile and `mvn deploy` remain); the release build about 5
//! minutes with a warm target/, 10 to 12 from a cold one.

mod check;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::test::{Counts, cargo, root, run_step};

/// Options of `cargo xtask dist`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Build with cargo's debug profile (quicker; what `cargo xtask test` checks), into
    /// target/dist-debug unless --out says otherwise.
    #[arg(long)]
    debug: bool,
    /// Do not build: only check the artefacts already in the output directory.
    #[arg(long, conflicts_with = "no_check")]
    check: bool,
    /// Build without installing and running the artefacts afterwards.
    #[arg(long)]
    no_check: bool,
    /// The output directory (default: dist/, or target/dist-debug with --debug).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Which cargo profile the native libraries come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Profile {
    Release,
    Debug,
}

impl Profile {
    /// The directory under target/ that cargo builds this profile into.
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }

    fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Profile::Release => &["--release"],
            Profile::Debug => &[],
        }
    }

    /// maturin's profile argument.
    fn maturin_profile(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "dev",
        }
    }
}

/// The wheel's platform tag. The libraries are linked against this machine's glibc (2.36),
/// and Rust's standard library then uses symbols versioned GLIBC_2.34 (`pthread_*`, `dlsym`):
/// 2.34 is the oldest glibc the artefacts run on, for every language. `auditwheel show` must
/// agree (checked after the build).
const MANYLINUX: &str = "manylinux_2_34";

/// The npm name of the platform package, and napi-rs's platform suffix.
const NPM_PLATFORM: &str = "linux-x64-gnu";
/// The entries of the checked-in package.json's `files` that only building from source needs
/// (left out of the packed main package).
const NPM_SOURCE_BUILD: &[&str] = &["scripts/build.js", "Cargo.toml", "build.rs", "src/"];
/// The NuGet package id (as in bindings/dotnet/Tether.csproj).
const NUGET_ID: &str = "Tether.Client";
/// The NuGet target framework folder of the mcs-built assembly (.NET Framework 4.6.1 and
/// Mono; netstandard2.0's baseline).
const NUGET_TFM: &str = "net461";

/// The artefact directories `build` replaces (nothing else in the output directory is
/// touched), and the checksum file.
const OUTPUT_PARTS: &[&str] = &[
    "npm",
    "python",
    "maven",
    "c",
    "dotnet",
    "swift",
    "SHA256SUMS",
];

pub(crate) fn command(args: Args) -> bool {
    let profile = if args.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    let out = args.out.unwrap_or_else(|| default_out(profile));
    let started = Instant::now();
    if !args.check {
        if let Err(e) = build(profile, &out) {
            eprintln!("\ncargo xtask dist: {e}");
            return false;
        }
        println!(
            "\n==> dist built in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            out.display()
        );
        list(&out);
    }
    if args.no_check {
        return true;
    }
    let mut counts = Counts::default();
    let ok = check::run(&out, profile, &mut counts);
    println!(
        "\n==> cargo xtask dist: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    ok
}

/// `cargo xtask test`'s step: the packages built with the debug profile into
/// target/dist-debug, then checked without Rust (each check counts as a test).
pub(crate) fn suite(counts: &mut Counts) -> Option<bool> {
    let out = default_out(Profile::Debug);
    if let Err(e) = build(Profile::Debug, &out) {
        eprintln!("\ncargo xtask dist --debug: {e}");
        counts.failed += 1;
        return Some(false);
    }
    list(&out);
    Some(check::run(&out, Profile::Debug, counts))
}

fn default_out(profile: Profile) -> PathBuf {
    match profile {
        Profile::Release => root().join("dist"),
        Profile::Debug => root().join("target").join("dist-debug"),
    }
}

/// The workspace version: `version` in Cargo.toml's `[workspace.package]` table.
pub(crate) fn workspace_version(root: &Path) -> Result<String, String> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let mut in_table = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == "[workspace.package]";
            continue;
        }
        if in_table
            && let Some(value) = line.strip_prefix("version")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            let value = value.trim().trim_matches('"');
            if !value.is_empty() {
                return Ok(value.to_owned());
            }
        }
    }
    Err("Cargo.toml has no [workspace.package] version".into())
}

/// The versions stated by checked-in manifests that cannot take the workspace's by themselves
/// (Python's comes from Cargo.toml through maturin; the .pc and the .nuspec get it at build
/// time): (file, version found).
fn manifest_versions(root: &Path) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    for file in [
        "bindings/node/package.json",
        "bindings/node/npm/linux-x64-gnu/package.json",
    ] {
        let json: serde_json::Value =
            serde_json::from_str(&read(&root.join(file))?).map_err(|e| format!("{file}: {e}"))?;
        let version = json["version"]
            .as_str()
            .ok_or_else(|| format!("{file} has no version"))?;
        found.push((file.to_owned(), version.to_owned()));
    }
    let pom = "bindings/uniffi/kotlin/pom.xml";
    let text = read(&root.join(pom))?;
    let after_artifact = text
        .split_once("<artifactId>tether</artifactId>")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{pom} has no <artifactId>tether</artifactId>"))?;
    found.push((
        pom.to_owned(),
        between(after_artifact, "<version>", "</version>", pom)?,
    ));
    let gradle = "bindings/uniffi/kotlin/build.gradle.kts";
    let text = read(&root.join(gradle))?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("version = "))
        .ok_or_else(|| format!("{gradle} has no `version = ` line"))?;
    found.push((gradle.to_owned(), between(line, "\"", "\"", gradle)?));
    let csproj = "bindings/dotnet/Tether.csproj";
    let text = read(&root.join(csproj))?;
    found.push((
        csproj.to_owned(),
        between(&text, "<Version>", "</Version>", csproj)?,
    ));
    Ok(found)
}

fn between(text: &str, start: &str, end: &str, file: &str) -> Result<String, String> {
    text.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(value, _)| value.trim().to_owned())
        .ok_or_else(|| format!("{file}: no {start}...{end}"))
}

/// Fails when a checked-in manifest states another version than the workspace.
fn check_manifest_versions(root: &Path, version: &str) -> Result<(), String> {
    let wrong: Vec<String> = manifest_versions(root)?
        .into_iter()
        .filter(|(_, v)| v != version)
        .map(|(file, v)| format!("{file} says {v}"))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the workspace version is {version} (Cargo.toml), but {}: make them agree",
            wrong.join(", ")
        ))
    }
}

/// Builds every artefact into `out` (replacing what an earlier build left there).
fn build(profile: Profile, out: &Path) -> Result<(), String> {
    let root = root();
    let version = workspace_version(&root)?;
    check_manifest_versions(&root, &version)?;
    println!(
        "\n==> cargo xtask dist: version {version}, {} profile, into {}",
        profile.dir(),
        out.display()
    );
    ensure_tools()?;
    build_native(profile)?;

    let stage = root.join("target").join("dist-stage").join(profile.dir());
    remove(&stage)?;
    mkdir(&stage)?;
    for part in OUTPUT_PARTS {
        remove(&out.join(part))?;
    }
    mkdir(out)?;
    let ctx = Context {
        root,
        version,
        profile,
        stage,
        out: out.to_path_buf(),
    };
    npm(&ctx)?;
    python(&ctx)?;
    maven(&ctx)?;
    let ffi = c_sdk(&ctx)?;
    dotnet(&ctx, &ffi)?;
    swift(&ctx)?;
    // Scratch only (the uniffi-bindgen copy alone is 50 to 200 MB).
    remove(&ctx.stage)?;
    sha256sums(out)
}

/// What every packaging step needs.
struct Context {
    root: PathBuf,
    version: String,
    profile: Profile,
    /// Scratch space for this build: target/dist-stage/<profile>.
    stage: PathBuf,
    out: PathBuf,
}

impl Context {
    /// A file cargo built for this profile.
    fn built(&self, name: &str) -> PathBuf {
        self.root.join("target").join(self.profile.dir()).join(name)
    }
}

/// The tools the build and the checks need besides cargo: binutils, tar, sha256sum, unzip,
/// gcc, npm, Maven, a Python 3, and from Debian (installed with apt-get when missing) mono's
/// compiler and runtime, its nuget, make and pkg-config.
fn ensure_tools() -> Result<(), String> {
    use crate::apt::have;
    let debian: [(&str, &str, &str); 6] = [
        ("mcs", "--version", "mono-mcs"),
        ("mono", "--version", "mono-runtime"),
        // Only looked for: Debian's nuget 2.8 spins forever printing its help to /dev/null
        // (`nuget help > /dev/null` never returns).
        ("/usr/bin/nuget", "", "nuget"),
        ("make", "--version", "make"),
        ("pkg-config", "--version", "pkgconf"),
        ("unzip", "-v", "unzip"),
    ];
    let present = |(tool, arg, _): &(&str, &str, &str)| {
        if arg.is_empty() {
            Path::new(tool).is_file()
        } else {
            have(tool, arg)
        }
    };
    let packages: Vec<&str> = debian
        .iter()
        .filter(|t| !present(t))
        .map(|(_, _, package)| *package)
        .collect();
    if !packages.is_empty()
        && !crate::apt::ensure("cargo xtask dist", &packages, || debian.iter().all(present))
    {
        return Err(format!(
            "cargo xtask dist needs the Debian packages {packages:?}"
        ));
    }
    let missing: Vec<&str> = [
        ("strip", "--version"),
        ("tar", "--version"),
        ("sha256sum", "--version"),
        ("gcc", "--version"),
        ("npm", "--version"),
        ("mvn", "--version"),
    ]
    .into_iter()
    .filter(|(tool, arg)| !have(tool, arg))
    .map(|(tool, _)| tool)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("cargo xtask dist needs {missing:?}"))
    }
}

/// The native libraries, each built exactly as the language suites build them (so that, in
/// the debug profile, `cargo xtask test` finds them built already).
fn build_native(profile: Profile) -> Result<(), String> {
    for (what, packages) in [
        ("the C library", &["tether-ffi"][..]),
        ("the Node.js addon", &["tether-node", "--lib"][..]),
        (
            "the uniffi library and its generator",
            &["tether-uniffi", "-p", "tether-uniffi-bindgen"][..],
        ),
    ] {
        let mut build = cargo();
        build
            .args(["build", "-p"])
            .args(packages)
            .args(profile.cargo_args());
        step(
            &format!(
                "cargo build -p {} {} ({what})",
                packages.join(" "),
                profile.cargo_args().join(" ")
            ),
            build,
        )?;
    }
    Ok(())
}

/// npm: the main package (JS, types, loader; its `optionalDependencies` name the platform
/// package) and the platform package with the prebuilt addon, as napi-rs lays them out.
fn npm(ctx: &Context) -> Result<(), String> {
    let node = ctx.root.join("bindings").join("node");
    let out = ctx.out.join("npm");
    mkdir(&out)?;

    let main = ctx.stage.join("npm").join("tether-session");
    mkdir(&main)?;
    let manifest: serde_json::Value = serde_json::from_str(&read(&node.join("package.json"))?)
        .map_err(|e| format!("bindings/node/package.json: {e}"))?;
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .ok_or("bindings/node/package.json has no files list")?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    // The packed package builds nothing: the addon comes from the platform package. Building
    // from source stays the way of a checkout, whose package.json keeps its install script
    // and lists the Rust sources.
    let mut dropped = Vec::new();
    for (index, file) in files.iter().enumerate() {
        if NPM_SOURCE_BUILD.contains(file) {
            dropped.push(format!("files[{index}]"));
        } else {
            copy(&node.join(file), &main.join(file))?;
        }
    }
    copy(&node.join("package.json"), &main.join("package.json"))?;
    let platform_name = format!("tether-session-{NPM_PLATFORM}");
    // `npm pkg` keeps the manifest's key order (that of `exports` conditions matters).
    let mut set = Command::new("npm");
    set.current_dir(&main).args([
        "pkg",
        "set",
        &format!("version={}", ctx.version),
        &format!("optionalDependencies.{platform_name}={}", ctx.version),
    ]);
    step("npm pkg set version optionalDependencies", set)?;
    let mut delete = Command::new("npm");
    delete
        .current_dir(&main)
        .args(["pkg", "delete", "scripts", "devDependencies"])
        // From the last, so that the indices stay right.
        .args(dropped.iter().rev());
    step(
        "npm pkg delete scripts devDependencies (and the Rust sources from files)",
        delete,
    )?;

    let platform = ctx.stage.join("npm").join(NPM_PLATFORM);
    mkdir(&platform)?;
    let platform_src = node.join("npm").join(NPM_PLATFORM);
    copy(
        &platform_src.join("package.json"),
        &platform.join("package.json"),
    )?;
    copy(&platform_src.join("README.md"), &platform.join("README.md"))?;
    strip_copy(
        &ctx.built("libtether_node.so"),
        &platform.join(format!("tether-session.{NPM_PLATFORM}.node")),
    )?;

    for (dir, name) in [
        (&main, "tether-session"),
        (&platform, platform_name.as_str()),
    ] {
        let mut pack = Command::new("npm");
        pack.current_dir(dir)
            .args(["pack", "--pack-destination"])
            .arg(&out);
        step(&format!("npm pack ({name})"), pack)?;
        expect_file(&out.join(format!("{name}-{}.tgz", ctx.version)))?;
    }
    Ok(())
}

/// The Python tools of the build (maturin, auditwheel), in a venv of their own.
fn tools_python(root: &Path) -> Result<PathBuf, String> {
    let venv = root.join("target").join("dist-tools").join("venv");
    let py = venv.join("bin").join("python");
    let ready = ["maturin", "auditwheel"]
        .iter()
        .all(|tool| venv.join("bin").join(tool).is_file());
    if ready {
        return Ok(py);
    }
    let mut create = Command::new(check::host_python()?);
    create.arg("-m").arg("venv").arg("--clear").arg(&venv);
    step("python3 -m venv target/dist-tools/venv", create)?;
    let mut install = Command::new(&py);
    install.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "maturin>=1.9,<2",
        "auditwheel>=6,<7",
    ]);
    step(
        "pip install maturin auditwheel (into target/dist-tools/venv)",
        install,
    )?;
    Ok(py)
}

/// Python: an abi3 wheel tagged manylinux (maturin), checked with auditwheel, and the sdist.
fn python(ctx: &Context) -> Result<(), String> {
    let py = tools_python(&ctx.root)?;
    let bin = py.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = ctx.root.join("bindings").join("python");
    let out = ctx.out.join("python");
    mkdir(&out)?;

    let mut wheel = Command::new(bin.join("maturin"));
    wheel
        .current_dir(&dir)
        .args(["build", "--profile", ctx.profile.maturin_profile()])
        .args(["--strip", "--compatibility", MANYLINUX, "--interpreter"])
        .arg(&py)
        .arg("--out")
        .arg(&out);
    step(
        &format!(
            "maturin build --profile {} --strip --compatibility {MANYLINUX}",
            ctx.profile.maturin_profile()
        ),
        wheel,
    )?;
    let wheel = find_one(&out, ".whl")?;
    let name = file_name(&wheel);
    let expected = format!(
        "tether_session-{}-cp39-abi3-{MANYLINUX}_x86_64.whl",
        ctx.version
    );
    if name != expected {
        return Err(format!("maturin made {name}, expected {expected}"));
    }

    let mut show = Command::new(bin.join("auditwheel"));
    show.arg("show").arg(&wheel);
    let report = capture("auditwheel show", &mut show)?;
    // `... is consistent with the following platform tag: "manylinux_2_34_x86_64".`
    let flat = report.split_whitespace().collect::<Vec<_>>().join(" ");
    let accepted = flat
        .split_once("following platform tag: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(tag, _)| tag);
    let tag = format!("{MANYLINUX}_x86_64");
    if accepted != Some(tag.as_str()) {
        return Err(format!(
            "auditwheel does not accept {name} as {tag}: {}",
            report.trim()
        ));
    }
    println!("auditwheel show: {name} is consistent with {tag}");

    let mut sdist = Command::new(bin.join("maturin"));
    sdist.current_dir(&dir).arg("sdist").arg("--out").arg(&out);
    step("maturin sdist", sdist)?;
    expect_file(&out.join(format!("tether_session-{}.tar.gz", ctx.version)))
}

/// Java/Kotlin: `mvn deploy` of bindings/uniffi/kotlin into a Maven repository directory,
/// with the native library of this profile inside the jar, the sources jar and the POM.
fn maven(ctx: &Context) -> Result<(), String> {
    let lib = ctx.stage.join("uniffi");
    mkdir(&lib)?;
    strip_copy(
        &ctx.built("libtether_uniffi.so"),
        &lib.join("libtether_uniffi.so"),
    )?;
    copy(&ctx.built("uniffi-bindgen"), &lib.join("uniffi-bindgen"))?;
    let repository = ctx.out.join("maven");
    mkdir(&repository)?;
    let build_dir = ctx
        .root
        .join("target")
        .join("dist-maven")
        .join(ctx.profile.dir());
    remove(&build_dir)?;

    let mut mvn = Command::new("mvn");
    mvn.current_dir(ctx.root.join("bindings/uniffi/kotlin"))
        .args([
            "-B",
            "-ntp",
            "-Dtether.skipCargo=true",
            "-Dmaven.test.skip=true",
            "-Dmaven.install.skip=true",
        ])
        .arg(format!("-Dcargo.libDir={}", lib.display()))
        .arg(format!("-Dtether.buildDir={}", build_dir.display()))
        .arg(format!(
            "-DaltDeploymentRepository=tether-dist::file://{}",
            repository.display()
        ))
        .arg("deploy");
    step(
        "mvn deploy (bindings/uniffi/kotlin: jar, sources jar, POM into dist/maven)",
        mvn,
    )?;

    let artifact = maven_dir(&repository, &ctx.version);
    let jar = artifact.join(format!("tether-{}.jar", ctx.version));
    for suffix in [".pom", "-sources.jar"] {
        expect_file(&artifact.join(format!("tether-{}{suffix}", ctx.version)))?;
    }
    // The jar must carry exactly the library of this profile.
    let mut unzip = Command::new("unzip");
    unzip
        .arg("-p")
        .arg(&jar)
        .arg("linux-x86-64/libtether_uniffi.so");
    let inside = unzip.output().map_err(|e| format!("unzip: {e}"))?.stdout;
    let staged =
        fs::read(lib.join("libtether_uniffi.so")).map_err(|e| format!("{}: {e}", lib.display()))?;
    if inside.is_empty() || inside != staged {
        return Err(format!(
            "{} does not hold the {} library as linux-x86-64/libtether_uniffi.so",
            jar.display(),
            ctx.profile.dir()
        ));
    }
    println!(
        "{}: linux-x86-64/libtether_uniffi.so is the {} build",
        file_name(&jar),
        ctx.profile.dir()
    );
    Ok(())
}

/// Where a Maven repository keeps version `version` of io.tether:tether.
pub(crate) fn maven_dir(repository: &Path, version: &str) -> PathBuf {
    repository
        .join("io")
        .join("tether")
        .join("tether")
        .join(version)
}

/// The C SDK's directory name (also the tarball's stem).
pub(crate) fn c_sdk_name(version: &str) -> String {
    format!("tether-c-{version}-linux-x86_64")
}

/// C: include/tether.h, lib/libtether_ffi.{so,a}, lib/pkgconfig/tether.pc (relocatable:
/// its prefix is `${pcfiledir}/../..`) and the README, as a tarball. Returns the staged
/// shared library (the .NET package ships the same one).
fn c_sdk(ctx: &Context) -> Result<PathBuf, String> {
    let ffi = ctx.root.join("crates").join("tether-ffi");
    let name = c_sdk_name(&ctx.version);
    let sdk = ctx.stage.join("c").join(&name);
    let lib = sdk.join("lib");
    mkdir(&lib.join("pkgconfig"))?;
    mkdir(&sdk.join("include"))?;
    copy(
        &ffi.join("include").join("tether.h"),
        &sdk.join("include").join("tether.h"),
    )?;
    strip_copy(
        &ctx.built("libtether_ffi.so"),
        &lib.join("libtether_ffi.so"),
    )?;
    strip_copy(&ctx.built("libtether_ffi.a"), &lib.join("libtether_ffi.a"))?;
    copy(&ffi.join("README.md"), &sdk.join("README.md"))?;
    let pc = read(&ffi.join("tether.pc.in"))?
        .replace("@PREFIX@", "${pcfiledir}/../..")
        .replace("@LIBDIR@", "${prefix}/lib")
        .replace("@INCLUDEDIR@", "${prefix}/include")
        .replace("@VERSION@", &ctx.version);
    write(&lib.join("pkgconfig").join("tether.pc"), &pc)?;

    let out = ctx.out.join("c");
    mkdir(&out)?;
    tar(
        &ctx.stage.join("c"),
        &name,
        &out.join(format!("{name}.tar.gz")),
    )?;
    Ok(lib.join("libtether_ffi.so"))
}

/// .NET: Tether.dll (mcs, optimised) with the C library in NuGet's
/// runtimes/linux-x64/native/ folder, as a .nupkg (Debian's nuget) and unpacked.
fn dotnet(ctx: &Context, ffi: &Path) -> Result<(), String> {
    let dir = ctx.root.join("bindings").join("dotnet");
    let build = ctx.stage.join("dotnet").join("build");
    let dll = build.join("Tether.dll");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&dir)
        .arg(format!("OUT={}", build.display()))
        .arg("MCSFLAGS=-warnaserror+ -optimize+")
        .arg(&dll);
    step("make -C bindings/dotnet Tether.dll (mcs -optimize+)", make)?;

    let layout = ctx
        .out
        .join("dotnet")
        .join(format!("{NUGET_ID}.{}", ctx.version));
    let lib = layout.join("lib").join(NUGET_TFM);
    let native = layout.join("runtimes").join("linux-x64").join("native");
    mkdir(&lib)?;
    mkdir(&native)?;
    copy(&dll, &lib.join("Tether.dll"))?;
    copy(&build.join("Tether.xml"), &lib.join("Tether.xml"))?;
    copy(ffi, &native.join("libtether_ffi.so"))?;
    copy(&dir.join("README.md"), &layout.join("README.md"))?;

    let mut pack = Command::new("nuget");
    pack.arg("pack")
        .arg(dir.join(format!("{NUGET_ID}.nuspec")))
        .arg("-BasePath")
        .arg(&layout)
        .arg("-Properties")
        .arg(format!("version={}", ctx.version))
        .arg("-OutputDirectory")
        .arg(ctx.out.join("dotnet"))
        .args(["-NoPackageAnalysis", "-NonInteractive"])
        .stdin(std::process::Stdio::null());
    step(
        &format!("nuget pack bindings/dotnet/{NUGET_ID}.nuspec"),
        pack,
    )?;
    expect_file(
        &ctx.out
            .join("dotnet")
            .join(format!("{NUGET_ID}.{}.nupkg", ctx.version)),
    )
}

/// Swift: the SwiftPM package (Package.swift, the generated sources, the README) as a
/// tarball. Not compiled: there is no Swift toolchain here.
fn swift(ctx: &Context) -> Result<(), String> {
    let src = ctx.root.join("bindings").join("uniffi").join("swift");
    let name = format!("tether-swift-{}", ctx.version);
    let package = ctx.stage.join("swift").join(&name);
    for file in check::SWIFT_PACKAGE_FILES {
        let to = package.join(file);
        if let Some(parent) = to.parent() {
            mkdir(parent)?;
        }
        copy(&src.join(file), &to)?;
    }
    let out = ctx.out.join("swift");
    mkdir(&out)?;
    tar(
        &ctx.stage.join("swift"),
        &name,
        &out.join(format!("{name}.tar.gz")),
    )
}

/// `tar czf archive -C parent dir`, with neutral owners and a stable order.
fn tar(parent: &Path, dir: &str, archive: &Path) -> Result<(), String> {
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-czf",
    ])
    .arg(archive)
    .arg("-C")
    .arg(parent)
    .arg(dir);
    step(&format!("tar czf {}", file_name(archive)), tar)
}

/// Writes SHA256SUMS (every file under `out`, relative paths, sorted).
fn sha256sums(out: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_files(out, out, &mut files)?;
    files.retain(|f| f != "SHA256SUMS" && OUTPUT_PARTS.iter().any(|p| f.starts_with(p)));
    files.sort();
    let mut sum = Command::new("sha256sum");
    sum.current_dir(out).args(&files);
    let text = capture("sha256sum", &mut sum)?;
    write(&out.join("SHA256SUMS"), &text)
}

pub(crate) fn collect_files(
    base: &Path,
    dir: &Path,
    files: &mut Vec<String>,
) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            collect_files(base, &path, files)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            files.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Prints the artefacts with their sizes.
fn list(out: &Path) {
    let mut files = Vec::new();
    if collect_files(out, out, &mut files).is_err() {
        return;
    }
    files.sort();
    println!("\n==> artefacts in {}", out.display());
    for file in files {
        let path = out.join(&file);
        // The Maven repository's checksum and metadata files are left out of the listing.
        let noise = [".md5", ".sha1", ".sha256", ".sha512", "maven-metadata.xml"];
        if noise.iter().any(|n| file.ends_with(n)) {
            continue;
        }
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("  {:>9.1} KiB  {file}", size as f64 / 1024.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers: each error names the file or the command.

pub(crate) fn step(name: &str, cmd: Command) -> Result<(), String> {
    if run_step(name, cmd) {
        Ok(())
    } else {
        Err(format!("`{name}` failed"))
    }
}

/// Runs `cmd` and returns its standard output; the error carries its standard error.
pub(crate) fn capture(name: &str, cmd: &mut Command) -> Result<String, String> {
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{name} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn strip_copy(from: &Path, to: &Path) -> Result<(), String> {
    let mut strip = Command::new("strip");
    strip.arg("--strip-debug").arg("-o").arg(to).arg(from);
    capture(&format!("strip {}", from.display()), &mut strip).map(drop)
}

pub(crate) fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

pub(crate) fn mkdir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn remove(path: &Path) -> Result<(), String> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else if path.exists() {
        fs::remove_file(path)
    } else {
        Ok(())
    };
    result.map_err(|e| format!("remove {}: {e}", path.display()))
}

pub(crate) fn expect_file(path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("{} was not made", path.display()))
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The one file in `dir` whose name ends with `suffix`.
pub(crate) fn find_one(dir: &Path, suffix: &str) -> Result<PathBuf, String> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| file_name(p).ends_with(suffix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no *{suffix} in {}", dir.display())),
        _ => Err(format!("several *{suffix} in {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_state_the_workspace_version() {
        let root = root();
        let version = workspace_version(&root).expect("workspace version");
        assert!(!version.is_empty());
        let found = manifest_versions(&root).expect("manifests");
        assert_eq!(found.len(), 5, "{found:?}");
        for (file, v) in found {
            assert_eq!(v, version, "{file} must state the workspace version");
        }
    }

    #[test]
    fn reads_the_workspace_version_from_its_table_only() {
        let dir = std::env::temp_dir().join(format!("tether-dist-version-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        fs::write(
            dir.join("Cargo.toml"),
            "[package]\nversion = \"9.9.9\"\n\n[workspace.package]\nedition = \"2024\"\nversion = \"1.2.3\"\n",
        )
        .expect("write");
        let version = workspace_version(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(version.as_deref(), Ok("1.2.3"));
    }
}
