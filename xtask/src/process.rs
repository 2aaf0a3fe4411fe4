//! Running the commands of a task: each a named step that fails the task with its command line,
//! and the workspace they run in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace root (xtask/ is inside it).
pub(crate) fn workspace() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// The main target directory: `CARGO_TARGET_DIR`, else the workspace's `target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(dir)),
        None => workspace().join("target"),
    }
}

/// The cargo that runs this task (the pinned toolchain's).
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

/// Runs `command` as the step `step`: prints the step, then fails with the command line if it
/// does not succeed.
pub(crate) fn run(step: &str, command: &mut Command) -> Result<(), String> {
    println!("xtask: {step}");
    let status = command
        .status()
        .map_err(|error| format!("{step}: could not start {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status}): {command:?}"))
    }
}

/// Whether `program` is on PATH.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The steps of a task with how long each took (wall, and the CPU time of the processes it
/// waited for), for the summary at its end.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    steps: Vec<(String, Duration, Option<Duration>)>,
}

impl Timings {
    /// Runs `step` and records how long it took.
    pub(crate) fn step(
        &mut self,
        step: &str,
        run: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let cpu = children_cpu();
        let result = run();
        let cpu = children_cpu()
            .zip(cpu)
            .map(|(after, before)| after.saturating_sub(before));
        self.steps.push((step.to_string(), started.elapsed(), cpu));
        result
    }

    /// Records a step that ran elsewhere (beside the others), with its CPU time if known.
    pub(crate) fn record(&mut self, step: &str, took: Duration, cpu: Option<Duration>) {
        self.steps.push((step.to_string(), took, cpu));
    }

    /// One line per step: wall time, then CPU time where it is known.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|(step, took, cpu)| {
                let cpu = cpu.map_or_else(String::new, |cpu| format!("cpu {}", minutes(cpu)));
                format!("{:>6} {cpu:>10}  {step}", minutes(*took))
            })
            .collect()
    }
}

/// The user and system time of this process's children that it has waited for (Linux's
/// `/proc/self/stat`, in clock ticks of 1/100 s); `None` elsewhere.
pub(crate) fn children_cpu() -> Option<Duration> {
    let fields = stat_fields("self")?;
    Some(ticks(&fields, 13)? + ticks(&fields, 14)?)
}

/// For a child process that has exited but not been waited for yet (a zombie, which keeps its
/// accounting): the user and system time it and the children it waited for used. `None`
/// while it runs, or where `/proc` cannot tell.
pub(crate) fn exited_cpu(pid: u32) -> Option<Duration> {
    let fields = stat_fields(&pid.to_string())?;
    if *fields.first()? != "Z" {
        return None;
    }
    Some(ticks(&fields, 11)? + ticks(&fields, 12)? + ticks(&fields, 13)? + ticks(&fields, 14)?)
}

/// The fields of `/proc/<pid>/stat` after the command name (which is in parentheses and may
/// hold spaces): the state first, utime, stime, cutime and cstime at 11 to 14.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The field at `index`, in clock ticks of 1/100 s.
fn ticks(fields: &[String], index: usize) -> Option<Duration> {
    Some(Duration::from_millis(
        fields.get(index)?.parse::<u64>().ok()? * 10,
    ))
}

/// `m:ss`.
pub(crate) fn minutes(took: Duration) -> String {
    let seconds = took.as_secs();
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

/// The bytes of every file under `dir` (0 when it does not exist); links are not followed.
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_usage(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |meta| meta.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(minutes(Duration::from_secs(0)), "0:00");
        assert_eq!(minutes(Duration::from_secs(61)), "1:01");
        assert_eq!(minutes(Duration::from_secs(725)), "12:05");
    }

    #[test]
    fn the_cpu_time_of_children_grows_with_their_work() {
        let before = children_cpu().unwrap();
        let spin = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(spin.success());
        assert!(children_cpu().unwrap() > before);
    }

    #[test]
    fn an_exited_child_tells_its_cpu_time_before_it_is_waited_for() {
        let mut spin = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let cpu = loop {
            if let Some(cpu) = exited_cpu(spin.id()) {
                break cpu;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(cpu > Duration::ZERO);
        assert!(spin.wait().unwrap().success());
        assert_eq!(exited_cpu(spin.id()), None);
    }

    #[test]
    fn disk_usage_counts_the_files_below() {
        let dir = target_dir().join("xtask-disk-usage-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("inner")).unwrap();
        std::fs::write(dir.join("a"), [0; 10]).unwrap();
        std::fs::write(dir.join("inner").join("b"), [0; 5]).unwrap();
        assert_eq!(disk_usage(&dir), 15);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(disk_usage(&dir), 0);
    }
}
