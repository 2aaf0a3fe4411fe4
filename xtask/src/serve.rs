//! `cargo xtask run <plugin>`: builds a plugin crate to wasm (release) and serves it locally in
//! the host's `proxy-async-serve`, with the demo services of the examples that have them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::install::{COMPONENT_TARGET, MODULE_TARGET};
use crate::process::{cargo, workspace};

/// The SDK feature of the `wasi:http@0.3.0` middleware build.
const MIDDLEWARE_FEATURE: &str = "proxy-async/wasi-http";

/// The examples `proxy-async-serve` has demo services for.
pub(crate) const DEMOS: [&str; 3] = ["auth-flow", "hello", "hello-no-config"];

/// The arguments of `cargo xtask run`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RunArgs {
    /// An example's name, or the path of a plugin crate.
    pub(crate) plugin: String,
    pub(crate) port: u16,
    pub(crate) component: bool,
    /// Build it as a `wasi:http@0.3.0` middleware component (`proxy-async/wasi-http`).
    pub(crate) middleware: bool,
    /// What goes on to `proxy-async-serve` as it is: `--config`, `--cluster`, `--upstream`,
    /// `--log-level` with their values.
    pub(crate) serve_args: Vec<String>,
}

impl RunArgs {
    pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<RunArgs, String> {
        let mut plugin = None;
        let mut port = 8080;
        let mut component = false;
        let mut middleware = false;
        let mut serve_args = Vec::new();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--port" => {
                    let value = args.next().ok_or("--port needs a value")?;
                    port = value
                        .parse()
                        .map_err(|_| format!("--port {value}: not a port number"))?;
                }
                "--component" => component = true,
                "--middleware" => middleware = true,
                "--config" | "--cluster" | "--upstream" | "--log-level" => {
                    let value = args.next().ok_or(format!("{arg} needs a value"))?;
                    serve_args.extend([arg, value]);
                }
                flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
                name if plugin.is_none() => plugin = Some(name.to_string()),
                extra => return Err(format!("unexpected argument {extra}")),
            }
        }
        Ok(RunArgs {
            plugin: plugin.ok_or(
                "run: which plugin? an example (`cargo xtask run auth-flow`) or a crate's path",
            )?,
            port,
            component,
            middleware,
            serve_args,
        })
    }

    /// The wasm target to build for.
    pub(crate) fn target(&self) -> &'static str {
        if self.component || self.middleware {
            COMPONENT_TARGET
        } else {
            MODULE_TARGET
        }
    }
}

/// What `cargo xtask run` serves.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PluginCrate {
    /// An example of the workspace, by package name.
    Example(String),
    /// A crate anywhere, by the folder holding its `Cargo.toml`.
    Path(PathBuf),
}

impl PluginCrate {
    /// `name_or_path` as an example's name, else as a crate's folder.
    pub(crate) fn find(name_or_path: &str) -> Result<PluginCrate, String> {
        if !name_or_path.contains('/')
            && workspace()
                .join("examples")
                .join(name_or_path)
                .join("Cargo.toml")
                .is_file()
        {
            return Ok(PluginCrate::Example(name_or_path.to_string()));
        }
        let dir = Path::new(name_or_path);
        if dir.join("Cargo.toml").is_file() {
            let dir =
                std::path::absolute(dir).map_err(|error| format!("{name_or_path}: {error}"))?;
            return Ok(PluginCrate::Path(dir));
        }
        Err(format!(
            "{name_or_path}: neither an example (examples/*) nor a folder with a Cargo.toml"
        ))
    }

    /// Builds it to wasm for `target` (release) and returns the `.wasm` the build made: an
    /// example in the workspace's target folder, a crate elsewhere in its own, unless
    /// `target_dir` says where.
    pub(crate) fn build(
        &self,
        target: &str,
        features: Option<&str>,
        target_dir: Option<&Path>,
    ) -> Result<PathBuf, String> {
        let mut command = cargo();
        command.args(["build", "--release", "--target", target]);
        if let Some(features) = features {
            command.args(["--features", features]);
        }
        command
            .args(["--message-format", "json-render-diagnostics"])
            .stdout(Stdio::piped());
        let what = match self {
            PluginCrate::Example(name) => {
                command.current_dir(workspace()).args(["-p", name]);
                name.clone()
            }
            PluginCrate::Path(dir) => {
                // Its own folder, so that its rust-toolchain.toml and its target/ apply.
                command
                    .current_dir(dir)
                    .env_remove("CARGO_TARGET_DIR")
                    .arg("--manifest-path")
                    .arg(dir.join("Cargo.toml"));
                dir.display().to_string()
            }
        };
        if let Some(target_dir) = target_dir {
            command.env("CARGO_TARGET_DIR", target_dir);
        }
        println!("xtask: build {what} (release, {target})");
        let output = command
            .output()
            .map_err(|error| format!("cannot run cargo: {error}"))?;
        if !output.status.success() {
            return Err(format!("building {what} failed ({})", output.status));
        }
        wasm_artifact(&String::from_utf8_lossy(&output.stdout))
            .ok_or_else(|| format!("building {what} made no .wasm: is it a `cdylib`?"))
    }

    /// The `--demo` of `proxy-async-serve` for it, if it has demo services.
    fn demo(&self) -> Option<&str> {
        match self {
            PluginCrate::Example(name) => DEMOS.iter().copied().find(|demo| demo == name),
            PluginCrate::Path(_) => None,
        }
    }
}

/// The `.wasm` of the `cdylib` a `cargo build --message-format json` output reports.
fn wasm_artifact(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"))
        })
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| {
            file.extension()
                .is_some_and(|extension| extension == "wasm")
        })
}

/// The `proxy-async-serve` command for `plugin`'s `wasm`, with `args`: the server built by
/// `cargo run` (in dev), or the one at `server`.
pub(crate) fn serve_command(
    plugin: &PluginCrate,
    wasm: &Path,
    args: &RunArgs,
    server: Option<&Path>,
) -> Command {
    let mut serve = match server {
        Some(server) => Command::new(server),
        None => {
            let mut run = cargo();
            run.current_dir(workspace())
                .args(["run", "--quiet", "-p", "proxy-async-host", "--bin"])
                .args(["proxy-async-serve", "--"]);
            run
        }
    };
    serve
        .arg("--wasm")
        .arg(wasm)
        .args(["--port", &args.port.to_string()])
        .args(&args.serve_args);
    if let Some(demo) = plugin.demo() {
        serve.args(["--demo", demo]);
    }
    if args.middleware {
        serve.arg("--middleware");
    }
    serve
}

/// `cargo xtask run`: builds, then serves until Ctrl-C.
pub(crate) fn run(args: &RunArgs) -> Result<(), String> {
    let plugin = PluginCrate::find(&args.plugin)?;
    let features = args.middleware.then_some(MIDDLEWARE_FEATURE);
    let wasm = plugin.build(args.target(), features, None)?;
    let mut serve = serve_command(&plugin, &wasm, args, None);
    println!("xtask: serve {} (building the host first)", wasm.display());
    // On Unix the server replaces this process, so Ctrl-C (or a kill of this pid) reaches it
    // directly.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = serve.exec();
        Err(format!("could not start {serve:?}: {error}"))
    }
    #[cfg(not(unix))]
    {
        crate::process::run("serve", &mut serve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        RunArgs::parse(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn run_arguments() {
        assert_eq!(
            parse(&["auth-flow"]),
            Ok(RunArgs {
                plugin: "auth-flow".to_string(),
                port: 8080,
                component: false,
                middleware: false,
                serve_args: Vec::new(),
            })
        );
        let args = parse(&[
            "../my-plugin",
            "--port",
            "18080",
            "--cluster",
            "auth=127.0.0.1:9000",
            "--config",
            "{}",
            "--upstream",
            "127.0.0.1:9001",
        ])
        .unwrap();
        assert_eq!(args.port, 18080);
        assert_eq!(
            args.serve_args,
            [
                "--cluster",
                "auth=127.0.0.1:9000",
                "--config",
                "{}",
                "--upstream",
                "127.0.0.1:9001"
            ]
        );
        assert_eq!(
            parse(&["auth-flow", "--component"]).map(|args| args.target()),
            Ok(COMPONENT_TARGET)
        );
        assert_eq!(
            parse(&["auth-flow", "--middleware"]).map(|args| (args.middleware, args.target())),
            Ok((true, COMPONENT_TARGET))
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&["hello", "--port", "x"]).is_err());
        assert!(parse(&["hello", "--cluster"]).is_err());
        assert!(parse(&["hello", "--verbose"]).is_err());
        assert!(parse(&["hello", "auth-flow"]).is_err());
    }

    #[test]
    fn examples_are_found_by_name_and_crates_by_folder() {
        assert_eq!(
            PluginCrate::find("fan-out"),
            Ok(PluginCrate::Example("fan-out".to_string()))
        );
        let hello = workspace().join("examples").join("hello");
        assert_eq!(
            PluginCrate::find(hello.to_str().unwrap()),
            Ok(PluginCrate::Path(hello))
        );
        assert!(PluginCrate::find("no-such-plugin").is_err());
    }

    #[test]
    fn every_demo_is_an_example() {
        for demo in DEMOS {
            assert_eq!(
                PluginCrate::find(demo).map(|plugin| plugin.demo().map(str::to_string)),
                Ok(Some(demo.to_string()))
            );
        }
    }

    #[test]
    fn the_wasm_is_read_from_the_build_messages() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libserde.rlib"]}"#,
            "not json",
            r#"{"reason":"compiler-artifact","target":{"kind":["cdylib","rlib"]},"filenames":["/t/my_plugin.wasm","/t/libmy_plugin.rlib"]}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            wasm_artifact(&messages),
            Some(PathBuf::from("/t/my_plugin.wasm"))
        );
        assert_eq!(wasm_artifact(r#"{"reason":"build-finished"}"#), None);
    }
}
