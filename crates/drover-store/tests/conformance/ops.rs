//! Operations: the instance id.

use crate::*;

pub async fn the_instance_id_is_made_once_and_kept(store: &Stores) {
    let id = store.ops.instance_id().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(store.ops.instance_id().await.unwrap(), id);
}

macro_rules! ops_suite {
    ($backend:ident, $fixture:expr) => {
        suite!($backend, $fixture;
            plain: [the_instance_id_is_made_once_and_kept];
            shared: []);
    };
}

ops_suite!(sqlite, crate::sqlite_fixture());
ops_suite!(sqlite_delayed, crate::delayed_fixture());
