//! Operations: the instance id.

use crate::*;

pub async fn the_instance_id_is_made_once_and_kept(store: &Stores) {
    let id = store.ops.instance_id().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(store.ops.instance_id().await.unwrap(), id);
}

macro_rules! ops_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [the_instance_id_is_made_once_and_kept];
            shared: []);
    };
}

ops_suite!(sqlite, crate::sqlite_fixture());
ops_suite!(sqlite_delayed, crate::delayed_fixture());
ops_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
