//! `cargo xtask new <dir>`: a plugin crate of its own, outside this workspace, with what a
//! plugin needs (crate type, profiles, toolchain with both wasm targets, dependencies), a
//! working plugin and its passing tests, the opt-in compiled twins, and a README with its
//! commands; and the check CI runs on it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::install::MODULE_TARGET;
use crate::process::{cargo, run, target_dir, workspace};
use crate::serve::{PluginCrate, RunArgs, serve_command};

/// The files of a new plugin crate: where each goes, and its template.
const TEMPLATE: [(&str, &str); 10] = [
    (
        "Cargo.toml",
        include_str!("../template/Cargo.toml.template"),
    ),
    (
        "rust-toolchain.toml",
        include_str!("../template/rust-toolchain.toml.template"),
    ),
    (".gitignore", include_str!("../template/gitignore.template")),
    ("README.md", include_str!("../template/README.md.template")),
    (
        "src/lib.rs",
        include_str!("../template/src/lib.rs.template"),
    ),
    (
        "tests/plugin.rs",
        include_str!("../template/tests/plugin.rs.template"),
    ),
    (
        "twins/Cargo.toml",
        include_str!("../template/twins/Cargo.toml.template"),
    ),
    (
        "twins/build.rs",
        include_str!("../template/twins/build.rs.template"),
    ),
    (
        "twins/src/lib.rs",
        include_str!("../template/twins/src/lib.rs.template"),
    ),
    (
        "twins/tests/twins.rs",
        include_str!("../template/twins/tests/twins.rs.template"),
    ),
];

/// The package name a new crate in `dir` gets: the folder's name, which must be one cargo
/// accepts as it is.
fn package_name(dir: &Path) -> Result<String, String> {
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| format!("{}: the folder needs a name", dir.display()))?;
    let valid = name.starts_with(|first: char| first.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "{name}: a plugin's folder is its package name: lower-case letters, digits, `-` and `_`, starting with a letter"
        ));
    }
    Ok(name.to_string())
}

/// The template's text with `{{name}}`, `{{crate}}`, `{{repo}}` and `{{dir}}` filled in.
fn render(template: &str, name: &str, repo: &Path, dir: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{repo}}", &repo.display().to_string())
        .replace("{{dir}}", dir)
}

/// `cargo xtask new <dir>`: writes the crate into `dir`, which must not exist (or be empty).
pub(crate) fn new(dir: &Path) -> Result<(), String> {
    let name = package_name(dir)?;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "{}: already exists and is not empty",
            dir.display()
        ));
    }
    let repo = workspace();
    let shown = dir.display().to_string();
    for (file, template) in TEMPLATE {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
        }
        std::fs::write(&path, render(template, &name, &repo, &shown))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    // The versions this workspace is tested with; cargo keeps the ones the crate uses.
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock"))
        .map_err(|error| format!("cannot copy Cargo.lock: {error}"))?;
    println!("xtask: created the plugin crate {name} in {shown}; next:");
    println!("  cd {shown} && cargo test                   # its tests, natively");
    println!("  cargo build --release --target {MODULE_TARGET}  # the .wasm for Envoy");
    println!("  cargo xtask run {shown}                    # (from here) served on 127.0.0.1:8080");
    Ok(())
}

/// What CI checks of the outside-crate path: a crate from the template, in a folder of its
/// own, tested, built to wasm, its twins' manifest resolved, and served by `cargo xtask run`'s
/// code. The workspace's target folders serve only as caches of compiled dependencies (same
/// versions, same profiles), so that this costs seconds, not another full build.
pub(crate) fn check() -> Result<(), String> {
    let dir = target_dir().join("scaffold").join("my-plugin");
    let _ = std::fs::remove_dir_all(&dir);
    new(&dir)?;
    let wasm_cache = target_dir().join("guests").join("build");
    run(
        "the new crate's tests (cargo test)",
        cargo()
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", target_dir())
            .arg("test"),
    )?;
    run(
        "the new crate's release build (cargo build --release --target wasm32-wasip1)",
        cargo()
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &wasm_cache)
            .args(["build", "--release", "--target", MODULE_TARGET]),
    )?;
    // Its twins link wasmtime built for its own dependency graph, minutes of compiling that
    // tests/lockstep (the same macro, the same guest build) covers: their manifest is checked.
    run(
        "the new crate's twins resolve (cargo metadata)",
        cargo()
            .current_dir(&dir)
            .args(["metadata", "--format-version", "1"])
            .stdout(Stdio::null()),
    )?;
    println!("xtask: serve the new crate (cargo xtask run <dir>)");
    let plugin = PluginCrate::find(&dir.display().to_string())?;
    let wasm = plugin.build(MODULE_TARGET, None, Some(&wasm_cache))?;
    let args = RunArgs::parse(["x", "--port", "0"].into_iter().map(str::to_string))?;
    // The server the tests built (`cargo run -p proxy-async-host` alone would build it again,
    // with the features of the host alone).
    let built = target_dir().join("debug").join("proxy-async-serve");
    let server = serve_command(&plugin, &wasm, &args, Some(&built))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start the server: {error}"))?;
    let mut server = Server(server);
    let address = server.address()?;
    let response = get(&address, "/")?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(format!("the served plugin answered:\n{response}"));
    }
    let echoed: serde_json::Value = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .ok_or_else(|| format!("the echo upstream's answer is not JSON:\n{response}"))?;
    if echoed["headers"]["x-hello"] != "world" {
        return Err(format!(
            "the upstream did not get the plugin's header:\n{response}"
        ));
    }
    println!("xtask: the served plugin added x-hello: world");
    Ok(())
}

/// A server process, killed when dropped.
struct Server(Child);

impl Server {
    /// The address it printed (`Serving <wasm> on http://<address>`). Its output goes on being
    /// read (and dropped) afterwards: a server writing to a closed pipe would stop.
    fn address(&mut self) -> Result<String, String> {
        let stdout = self.0.stdout.take().ok_or("the server has no stdout")?;
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, address)) = line.split_once(" on http://") {
                    let _ = found.send(address.trim().to_string());
                }
            }
        });
        address
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| "the server stopped without saying where it listens".to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET of `path` at `address`, the whole response as text.
fn get(address: &str, path: &str) -> Result<String, String> {
    let mut connection = TcpStream::connect(address)
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    connection
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|error| error.to_string())?;
    write!(
        connection,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .map_err(|error| format!("cannot send to {address}: {error}"))?;
    let mut response = String::new();
    connection
        .read_to_string(&mut response)
        .map_err(|error| format!("cannot read from {address}: {error}"))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_names_the_package() {
        assert_eq!(
            package_name(Path::new("/tmp/my-plugin")),
            Ok("my-plugin".to_string())
        );
        assert!(package_name(Path::new("/tmp/My Plugin")).is_err());
        assert!(package_name(Path::new("/tmp/1plugin")).is_err());
        assert!(package_name(Path::new("/")).is_err());
    }

    #[test]
    fn every_placeholder_is_filled() {
        for (file, template) in TEMPLATE {
            let text = render(template, "my-plugin", Path::new("/repo"), "../my-plugin");
            assert!(!text.contains("{{"), "{file} keeps a placeholder");
        }
        let manifest = render(TEMPLATE[0].1, "my-plugin", Path::new("/repo"), "x");
        assert!(manifest.contains(r#"proxy-async = { path = "/repo/sdk" }"#));
        assert!(manifest.contains(r#"crate-type = ["cdylib", "rlib"]"#));
    }

    #[test]
    fn the_readme_shows_the_plugin_a_new_crate_gets() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split_once("## Write a plugin")
            .and_then(|(_, rest)| rest.split_once("\n## "))
            .map(|(section, _)| section)
            .unwrap();
        let (_, lib) = TEMPLATE
            .iter()
            .find(|(file, _)| *file == "src/lib.rs")
            .unwrap();
        let lib = render(lib, "my-plugin", Path::new("/repo"), "../my-plugin");
        assert!(
            section.contains(&format!("```rust\n{lib}```")),
            "README's \"Write a plugin\" does not show the template's src/lib.rs as `cargo xtask new` writes it"
        );
    }

    #[test]
    fn a_folder_that_holds_something_is_left_alone() {
        let dir = target_dir().join("xtask-new-test").join("busy-plugin");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep"), "mine").unwrap();
        assert!(new(&dir).unwrap_err().contains("not empty"));
        assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "mine");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_crate_has_every_file() {
        let dir = target_dir().join("xtask-new-test").join("fresh-plugin");
        let _ = std::fs::remove_dir_all(&dir);
        new(&dir).unwrap();
        for (file, _) in TEMPLATE {
            assert!(dir.join(file).is_file(), "{file}");
        }
        assert!(dir.join("Cargo.lock").is_file());
        let lib = std::fs::read_to_string(dir.join("tests/plugin.rs")).unwrap();
        assert!(lib.contains("use fresh_plugin::MyPlugin;"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
