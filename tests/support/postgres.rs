//! A throwaway PostgreSQL 15 cluster for the tests: `initdb` and `pg_ctl`
//! from the system's server binaries, in a temp folder, listening on
//! 127.0.0.1 (a free port) and on a unix socket in that folder only, with a
//! password (SCRAM) for TCP. Stopped (`pg_ctl stop -m immediate`) and removed
//! when dropped.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the cluster
//! runs as the `postgres` user (`runuser -u postgres --`), in a folder given
//! to it. As anyone else it runs as the test's own user.
//!
//! Used by the end-to-end tests (`tests/support/mod.rs`) and by the store's
//! unit tests (`src/store/postgres/`, through `#[path]`): one helper, so both
//! start the cluster the same way. It never skips: a machine without the
//! server binaries fails the test saying what to install (`.ci/run` installs
//! them).
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian's `postgresql-15` puts the server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The superuser's password on TCP.
pub const PASSWORD: &str = "gatherd-test";

/// A running throwaway cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Starts a fresh cluster; panics, saying why, if it cannot.
    pub fn start() -> Cluster {
        let initdb = Path::new(PG_BIN).join("initdb");
        assert!(
            initdb.exists(),
            "{} is missing: the PostgreSQL tests need the PostgreSQL 15 server (apt-get install -y postgresql-15; \
             .ci/run does it)",
            initdb.display()
        );
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = tempfile::Builder::new().prefix("gatherd-pg-").tempdir().expect("make the cluster's temp folder");
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .expect("read the user database")
                .expect("running as root, the cluster runs as the `postgres` user, which postgresql-15 creates");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("give the temp folder to postgres");
        }
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        if as_postgres {
            // Readable by postgres for initdb; removed right after.
            let user = nix::unistd::User::from_name("postgres").ok().flatten().expect("the postgres user");
            nix::unistd::chown(&pwfile, Some(user.uid), Some(user.gid)).expect("give the password file to postgres");
        }
        let mut cluster = Cluster { dir, port: 0, as_postgres };
        let data = cluster.data();
        cluster.pg(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--pwfile",
                path_str(&pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        std::fs::remove_file(&pwfile).expect("remove the password file");
        // A free port can be taken between the probe and the start: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let options = cluster.options();
            let out = cluster.pg_ctl_start(&options);
            if out.status.success() {
                return cluster;
            }
            let log = cluster.dir.path().join("server.log");
            last = format!(
                "{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("the throwaway PostgreSQL cluster did not start: {last}");
    }

    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            path_str(self.dir.path())
        )
    }

    fn pg_ctl_start(&self, options: &str) -> Output {
        let (data, log) = (self.data(), self.dir.path().join("server.log"));
        self.run_pg("pg_ctl", &["-D", path_str(&data), "-o", options, "-l", path_str(&log), "-w", "-t", "60", "start"])
    }

    /// Stops the server (`pg_ctl stop -m fast`: its connections are cut), as
    /// a database restart or an outage does; [`start_again`](Cluster::start_again)
    /// brings it back on the same port.
    pub fn stop(&self) {
        let data = self.data();
        self.pg("pg_ctl", &["-D", path_str(&data), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the stopped server again, same data, same port.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start(&self.options());
        assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Turns TLS on (`ssl = on`) with this certificate and key (PEM): copies
    /// them into the cluster's folder (given to `postgres`, the key 0600, as
    /// the server demands) and restarts the server with them.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let (to_cert, to_key) = (self.dir.path().join("server.crt"), self.dir.path().join("server.key"));
        std::fs::copy(cert, &to_cert).expect("copy the server certificate");
        std::fs::copy(key, &to_key).expect("copy the server key");
        std::fs::set_permissions(&to_key, std::fs::Permissions::from_mode(0o600)).expect("chmod the key");
        if self.as_postgres {
            let user = nix::unistd::User::from_name("postgres").ok().flatten().expect("the postgres user");
            for file in [&to_cert, &to_key] {
                nix::unistd::chown(file, Some(user.uid), Some(user.gid)).expect("give the TLS files to postgres");
            }
        }
        self.stop();
        let options = format!(
            "{} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            self.options(),
            path_str(&to_cert),
            path_str(&to_key)
        );
        let out = self.pg_ctl_start(&options);
        assert!(out.status.success(), "start with TLS: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The data folder.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The TCP port it listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder of its unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A URL for database `db` over TCP on 127.0.0.1, with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db` and returns its URL: one cluster, a database per
    /// test, so tests in one process share the start-up cost.
    pub fn create_db(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.url(db)
    }

    /// Runs `sql` with psql over the unix socket; panics with its error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run_pg(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                path_str(self.dir.path()),
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        );
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let out = self.run_pg(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs one of the server's programs, as `postgres` when we are root.
    fn run_pg(&self, program: &str, args: &[&str]) -> Output {
        let exe = Path::new(PG_BIN).join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&exe);
            cmd
        } else {
            Command::new(&exe)
        };
        // Its own working folder: postgres may not be able to enter ours.
        cmd.args(args).current_dir(self.dir.path()).env_remove("PGDATA");
        cmd.output().unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }
}

impl Cluster {
    /// One cluster for the whole test process, started at the first call:
    /// tests take a database each (`create_db`), so the start-up is paid
    /// once. A static is never dropped, so a watcher process (started here,
    /// as this process's user) stops the cluster and removes its folder once
    /// this process is gone, however it ended.
    pub fn shared() -> &'static Cluster {
        static SHARED: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Cluster::start();
            let stop = if cluster.as_postgres { "runuser -u postgres -- " } else { "" };
            let script = format!(
                "while [ -d /proc/{pid} ]; do sleep 0.2; done; {stop}{bin}/pg_ctl -D '{data}' -m immediate -w stop \
                 >/dev/null 2>&1; rm -rf '{dir}'",
                pid = std::process::id(),
                bin = PG_BIN,
                data = path_str(&cluster.data()),
                dir = path_str(cluster.dir.path()),
            );
            // Never waited for, on purpose: it outlives this process (then
            // init reaps it), which is its whole point.
            #[allow(clippy::zombie_processes)]
            Command::new("sh")
                .args(["-c", &script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start the watcher that stops the shared cluster");
            cluster
        })
    }

    /// A fresh database in the shared cluster, named uniquely in this
    /// process; its URL.
    pub fn fresh_db() -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Cluster::shared().create_db(&format!("t{}_{n}", std::process::id()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.data();
            let _ = self.run_pg("pg_ctl", &["-D", path_str(&data), "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("find a free port").port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
