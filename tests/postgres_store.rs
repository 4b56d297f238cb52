//! The PostgreSQL run store end to end, on a throwaway cluster the test
//! starts itself (`support::postgres::Cluster`): never skipped.

mod support;

use std::net::TcpStream;

use support::postgres::Cluster;

#[test]
fn the_throwaway_cluster_serves_postgresql_15_on_loopback_and_is_gone_when_dropped() {
    let cluster = Cluster::start();
    let version = cluster.psql("postgres", "SHOW server_version_num");
    assert!(version.starts_with("15"), "server_version_num {version}");
    assert_eq!(cluster.psql("postgres", "SHOW listen_addresses"), "127.0.0.1");
    let url = cluster.create_db("probe");
    assert!(url.starts_with("postgres://postgres:") && url.ends_with("/probe"), "{url}");
    let (port, data) = (cluster.port(), cluster.data());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "nothing listens on 127.0.0.1:{port}");
    drop(cluster);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the cluster still listens after the drop");
    assert!(!data.exists(), "{} is left behind", data.display());
}
