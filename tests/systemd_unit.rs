//! examples/gatherd.service, the unit operators install: systemd accepts it
//! as written (`systemd-analyze verify` prints nothing about it), its hardening
//! keeps the exposure score of `systemd-analyze security` at 2.0 or lower, and
//! it keeps the settings the daemon's signal and notify handling relies on.
//! The same for examples/gatherd-root.service (jobs as their own users), at
//! 2.7 or lower, with only the capabilities switching users needs.
//!
//! `systemd-analyze` (systemd 252 or later) must be installed: without it these
//! tests fail rather than skip, so CI cannot pass without checking the unit.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The path the example unit runs gatherd from.
const INSTALLED_BINARY: &str = "/usr/local/bin/gatherd";

/// The highest exposure score the unit may have (the bar).
const MAX_EXPOSURE: f64 = 2.0;

/// The highest exposure score the root unit may have: it runs as root with
/// four capabilities and may switch users (2.7: `ProtectProc=default`, as
/// the daemon must see its steps' processes that run as other users).
const MAX_ROOT_EXPOSURE: f64 = 2.7;

/// The unprivileged unit and the one that runs jobs as their own users.
const UNPRIVILEGED: &str = "gatherd.service";
const ROOT: &str = "gatherd-root.service";

fn example_unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The example unit with ExecStart pointed at the binary cargo built, written as
/// `gatherd.service` in a fresh temporary folder. `verify` checks that ExecStart's
/// program exists, and /usr/local/bin/gatherd need not exist on a test machine.
fn unit_with_built_binary(name: &str) -> (tempfile::TempDir, PathBuf) {
    let unit = example_unit(name);
    let exec_start = format!("ExecStart={INSTALLED_BINARY} ");
    assert_eq!(
        unit.matches(&exec_start).count(),
        1,
        "the unit should have one `{exec_start}...` line for the test to rewrite"
    );
    // Quoted, and `%` doubled, so that a checkout path with spaces or `%` stays one word.
    let built = env!("CARGO_BIN_EXE_gatherd").replace('%', "%%");
    let unit = unit.replace(&exec_start, &format!("ExecStart=\"{built}\" "));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("gatherd.service");
    std::fs::write(&path, unit).expect("writing the unit to the temporary folder");
    (dir, path)
}

/// Runs `systemd-analyze ARGS...`, failing the test with a clear message if it
/// is missing: the checks must not quietly pass on a machine without it.
fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install systemd 252 or later \
                 (Debian: apt-get install systemd); the unit checks need it"
            )
        })
}

fn text(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether a line of `verify` output is a complaint about a *different* unit
/// file, one of the system's that ours pulls in (`multi-user.target`, ...):
/// those start with that unit's name or file path and are not ours to fix.
fn blames_another_unit(line: &str, ours: &Path) -> bool {
    let Some((subject, _)) = line.split_once(':') else {
        return false;
    };
    let is_unit = [".service", ".target", ".socket", ".mount", ".slice", ".timer", ".path"]
        .iter()
        .any(|suffix| subject.ends_with(suffix));
    is_unit && subject != "gatherd.service" && Path::new(subject) != ours && !subject.ends_with("/gatherd.service")
}

#[test]
fn unit_passes_systemd_analyze_verify_without_a_word() {
    verify_says_nothing(UNPRIVILEGED);
}

#[test]
fn root_unit_passes_systemd_analyze_verify_without_a_word() {
    verify_says_nothing(ROOT);
}

fn verify_says_nothing(name: &str) {
    let (_dir, unit) = unit_with_built_binary(name);
    let output = systemd_analyze(&["verify"], &unit);
    let all = text(&output);
    assert!(output.status.success(), "systemd-analyze verify failed:\n{all}");
    // verify exits 0 on warnings (an unknown key, a typo in a value), so any
    // line it prints that is not about another unit fails the test.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| !line.trim().is_empty() && !blames_another_unit(line, &unit))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify complained:\n{all}");
}

#[test]
fn unit_exposure_score_is_at_most_two() {
    exposure_at_most(UNPRIVILEGED, MAX_EXPOSURE);
}

#[test]
fn root_unit_exposure_score_is_at_most_two_point_seven() {
    exposure_at_most(ROOT, MAX_ROOT_EXPOSURE);
}

fn exposure_at_most(name: &str, max: f64) {
    let (_dir, unit) = unit_with_built_binary(name);
    let output = systemd_analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    let all = text(&output);
    assert!(output.status.success(), "systemd-analyze security failed:\n{all}");
    // The last line: "→ Overall exposure level for gatherd.service: 1.4 OK 🙂".
    let stdout = String::from_utf8_lossy(&output.stdout);
    let marker = "Overall exposure level for gatherd.service:";
    let score: f64 = stdout
        .lines()
        .find_map(|line| line.split_once(marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no `{marker} N` line in the output:\n{all}"));
    assert!(score <= max, "exposure {score} is above {max:.1}; the settings marked ✗ are the ones to look at:\n{all}");
}

/// The `[Service]` settings of the example unit, in file order (a key may repeat).
fn service_settings(name: &str) -> Vec<(String, String)> {
    let unit = example_unit(name);
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').expect("a key=value line");
            settings.push((key.to_string(), value.to_string()));
        }
    }
    settings
}

fn setting(settings: &[(String, String)], key: &str) -> String {
    let values: Vec<&str> = settings.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect();
    match values[..] {
        [value] => value.to_string(),
        _ => panic!("expected one {key}= in [Service], found {values:?}"),
    }
}

#[test]
fn unit_keeps_what_the_daemon_relies_on() {
    keeps_what_the_daemon_relies_on(UNPRIVILEGED);
}

#[test]
fn root_unit_keeps_what_the_daemon_relies_on_and_only_the_capabilities_to_switch_users() {
    keeps_what_the_daemon_relies_on(ROOT);
    let s = service_settings(ROOT);
    assert!(s.iter().all(|(k, _)| k != "User" && k != "DynamicUser"), "the root unit runs as root");
    let mut caps: Vec<String> = setting(&s, "CapabilityBoundingSet").split_whitespace().map(String::from).collect();
    caps.sort();
    assert_eq!(caps, ["CAP_DAC_READ_SEARCH", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]);
    assert_eq!(setting(&s, "NoNewPrivileges"), "yes");
    // setuid, setgid and setgroups stay allowed after `~@privileged`.
    let filters: Vec<&str> = s.iter().filter(|(k, _)| k == "SystemCallFilter").map(|(_, v)| v.as_str()).collect();
    assert_eq!(filters, ["@system-service", "~@privileged", "@setuid"]);
}

fn keeps_what_the_daemon_relies_on(name: &str) {
    let s = service_settings(name);
    // sd_notify: READY=1, WATCHDOG=1, RELOADING=1 and STOPPING=1 from gatherd only.
    assert_eq!(setting(&s, "Type"), "notify");
    assert_eq!(setting(&s, "NotifyAccess"), "main");
    assert!(!setting(&s, "WatchdogSec").is_empty());
    // SIGHUP reloads; SIGTERM reaches gatherd first so it can cancel its own
    // process groups, with time for shutdown_grace (30 s by default) and more.
    assert_eq!(setting(&s, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(setting(&s, "KillMode"), "mixed");
    let stop = humantime::parse_duration(&setting(&s, "TimeoutStopSec")).expect("a duration");
    assert!(stop > Duration::from_secs(30), "TimeoutStopSec {stop:?} leaves no room past the grace");
    assert_eq!(setting(&s, "Restart"), "on-failure");
    assert_eq!(setting(&s, "OOMPolicy"), "continue", "a job's OOM kill must not stop the service");
    // The daemon finds its state in $STATE_DIRECTORY; the jobs folder is writable.
    assert_eq!(setting(&s, "StateDirectory"), "gatherd");
    assert_eq!(setting(&s, "ConfigurationDirectory"), "gatherd");
    assert!(
        setting(&s, "ExecStart").starts_with(&format!("{INSTALLED_BINARY} daemon --jobs /var/spool/gatherd ")),
        "ExecStart should run the daemon on /var/spool/gatherd"
    );
    assert_eq!(setting(&s, "ReadWritePaths"), "/var/spool/gatherd");
    // http steps reach local services over TCP and Unix sockets.
    let families = setting(&s, "RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.split_whitespace().any(|f| f == family), "{family} must stay allowed");
    }
}
