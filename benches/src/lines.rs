//! `profile <example> <scenario> --lines`: the SDK plugin's instructions by source line.
//!
//! The plugin is built once more with DWARF line tables (`debug = "line-tables-only"`, which
//! changes no code: the profile checks that its fuel equals the measured module's), the
//! functions that ran in the request get a counter per straight-line run
//! ([`instrument_runs`]), and each run's executions are spread over its instructions' source
//! lines. A line inside an inlined function from outside the workspace (`core`, `alloc`,
//! a dependency) is shown with the innermost workspace line it was inlined into, so that the
//! list points at code we can change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use addr2line::gimli;

use crate::instrument::Run;

/// Where in the source an instruction came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SourceLine {
    /// `file:line` of the innermost frame.
    pub(crate) at: String,
    /// `file:line` of the innermost workspace frame, when the innermost one is outside it.
    pub(crate) via: Option<String>,
}

/// Builds `package` for wasm32-wasip1 (release, with line tables) into its own target
/// directory under `workspace`'s, and returns the module's bytes.
pub(crate) fn build_with_line_tables(workspace: &Path, package: &str) -> Result<Vec<u8>, String> {
    let target_dir = workspace.join("target").join("profile-lines");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
        ])
        .arg(package)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")
        .env("CARGO_PROFILE_RELEASE_STRIP", "none")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !status.success() {
        return Err(format!(
            "building {package} with line tables failed: {status}"
        ));
    }
    let path = target_dir
        .join("wasm32-wasip1")
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// A module's line tables.
pub(crate) struct LineTables {
    context: addr2line::Context<gimli::EndianSlice<'static, gimli::LittleEndian>>,
    workspace: PathBuf,
}

impl LineTables {
    /// Reads the DWARF custom sections of `wasm`.
    pub(crate) fn read(wasm: &[u8], workspace: &Path) -> Result<LineTables, String> {
        let mut sections: HashMap<String, Vec<u8>> = HashMap::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            let payload = payload.map_err(|error| format!("cannot parse the module: {error}"))?;
            if let wasmparser::Payload::CustomSection(section) = payload
                && section.name().starts_with(".debug_")
            {
                sections.insert(section.name().to_string(), section.data().to_vec());
            }
        }
        if !sections.contains_key(".debug_line") {
            return Err("the module has no line tables (.debug_line)".to_string());
        }
        let dwarf = gimli::Dwarf::load(|id: gimli::SectionId| -> Result<_, gimli::Error> {
            // Leaked: the tables live as long as the profile run, which ends the process.
            let data: &'static [u8] = Box::leak(
                sections
                    .get(id.name())
                    .cloned()
                    .unwrap_or_default()
                    .into_boxed_slice(),
            );
            Ok(gimli::EndianSlice::new(data, gimli::LittleEndian))
        })
        .map_err(|error| format!("cannot read the DWARF sections: {error}"))?;
        let context = addr2line::Context::from_dwarf(dwarf)
            .map_err(|error| format!("cannot read the line tables: {error}"))?;
        Ok(LineTables {
            context,
            workspace: workspace.to_path_buf(),
        })
    }

    /// The source line of the instruction at `offset` in the code section.
    fn line_of(&self, offset: u32) -> SourceLine {
        let mut frames: Vec<String> = Vec::new();
        let mut in_workspace: Vec<bool> = Vec::new();
        if let Ok(mut found) = self.context.find_frames(u64::from(offset)).skip_all_loads() {
            while let Ok(Some(frame)) = found.next() {
                let Some(location) = frame.location else {
                    continue;
                };
                let file = location.file.unwrap_or("?");
                let relative = Path::new(file).strip_prefix(&self.workspace).ok();
                in_workspace.push(relative.is_some());
                let shown =
                    relative.map_or_else(|| short_path(file), |path| path.display().to_string());
                frames.push(format!("{shown}:{}", location.line.unwrap_or(0)));
            }
        }
        let Some(at) = frames.first().cloned() else {
            return SourceLine {
                at: "?".to_string(),
                via: None,
            };
        };
        let via = if in_workspace.first() == Some(&true) {
            None
        } else {
            frames
                .iter()
                .zip(&in_workspace)
                .find(|(_, inside)| **inside)
                .map(|(frame, _)| frame.clone())
        };
        SourceLine { at, via }
    }

    /// The instructions of `runs` by source line, from the runs' counters (`counts[i]` is run
    /// `i`'s counter), most first.
    pub(crate) fn attribute(&self, runs: &[Run], counts: &[u64]) -> Vec<(SourceLine, u64)> {
        let mut lines: HashMap<u32, SourceLine> = HashMap::new();
        let mut totals: HashMap<SourceLine, u64> = HashMap::new();
        for (run, &count) in runs.iter().zip(counts) {
            if count == 0 || run.cost <= 0 {
                continue;
            }
            let executions = count / run.cost.unsigned_abs();
            let mut spread = 0;
            for &(offset, cost) in &run.instructions {
                let line = lines
                    .entry(offset)
                    .or_insert_with(|| self.line_of(offset))
                    .clone();
                let instructions = executions * cost.unsigned_abs();
                spread += instructions;
                *totals.entry(line).or_insert(0) += instructions;
            }
            // What no original instruction carries (entering the function): its first line.
            let rest = count.saturating_sub(spread);
            if rest > 0 {
                let line = run.instructions.first().map_or_else(
                    || SourceLine {
                        at: "(no instruction)".to_string(),
                        via: None,
                    },
                    |(offset, _)| lines[offset].clone(),
                );
                *totals.entry(line).or_insert(0) += rest;
            }
        }
        let mut sorted: Vec<(SourceLine, u64)> = totals.into_iter().collect();
        sorted.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
        sorted
    }
}

/// `lines` added up by the workspace line each belongs to (its own, or the one it was
/// inlined into), most first: what each line of our code costs with what it inlines.
pub(crate) fn by_workspace_line(lines: &[(SourceLine, u64)]) -> Vec<(String, u64)> {
    let mut totals: HashMap<String, u64> = HashMap::new();
    for (line, count) in lines {
        let key = line.via.clone().unwrap_or_else(|| line.at.clone());
        *totals.entry(key).or_insert(0) += count;
    }
    let mut sorted: Vec<(String, u64)> = totals.into_iter().collect();
    sorted.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
    sorted
}

/// A path outside the workspace, shortened to what names it: `core/src/cell.rs` for the
/// standard library, `walrus-0.28.0/src/lib.rs` for a registry crate.
fn short_path(file: &str) -> String {
    if let Some(index) = file.rfind("/src/wasi-libc/") {
        return file[index + "/src/".len()..].to_string();
    }
    for marker in ["/library/", "/registry/src/"] {
        if let Some(index) = file.find(marker) {
            let rest = &file[index + marker.len()..];
            // A registry path goes on with the index directory, then the crate.
            let rest = if marker == "/registry/src/" {
                rest.split_once('/')
                    .map_or(rest, |(_, crate_path)| crate_path)
            } else {
                rest
            };
            return rest.to_string();
        }
    }
    file.to_string()
}
