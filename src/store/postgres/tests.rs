//! What is PostgreSQL's own: the URL, the migrations' bookkeeping, the
//! messages at open. (The store's behaviour is `store::tests`, on both
//! backends.)

use super::cluster::Cluster;
use super::*;

#[tokio::test]
async fn migrations_are_recorded_in_schema_version_and_a_newer_schema_is_refused_with_the_way_out() {
    let url = Cluster::fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    open_postgres(&url).await.unwrap().close().await.unwrap();
    open_postgres(&url).await.expect("a second open finds it up to date").close().await.unwrap();
    let applied = Cluster::shared().psql(&db, "SELECT string_agg(version || ' ' || name, ',') FROM schema_version");
    assert_eq!(applied, "1 0001_init.sql");
    Cluster::shared().psql(&db, "INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')");
    let err = open_postgres(&url).await.expect_err("a newer schema is refused").to_string();
    assert!(err.contains("schema version 99, newer than this gatherd knows (1): upgrade gatherd"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_is_said_with_its_url_and_never_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://gatherd:s3cret-pw@127.0.0.1:{port}/history?connect_timeout=5");
    let err = open_postgres(&url).await.expect_err("nothing listens there").to_string();
    assert!(
        err.starts_with(&format!("cannot open the run history at postgres://gatherd@127.0.0.1:{port}/history: ")),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = open_postgres("mysql://x").await.expect_err("not a PostgreSQL URL").to_string();
    assert!(err.contains("it is not a PostgreSQL URL"), "{err}");
    let err =
        open_postgres(&format!("{}?sslmode=require", Cluster::fresh_db())).await.expect_err("no TLS yet").to_string();
    assert!(err.contains("does not speak TLS to PostgreSQL yet"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_the_servers_own_words() {
    let url = Cluster::fresh_db().replace(super::cluster::PASSWORD, "wrong");
    let err = open_postgres(&url).await.expect_err("refused").to_string();
    assert!(err.contains("password authentication failed for user \"postgres\""), "{err}");
    assert!(!err.contains(":wrong@"), "{err}");
}
