//! Staff users, the staff audit trail and idempotency keys, on every backend.

mod helpers;
#[path = "../../core/tests/law_cases/mod.rs"]
mod law_cases;

use serde_json::json;
use veto_core::Role;
use veto_store::{IdempotencyClaim, NewStaffAction, StoreError, UserUpdate};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keep_an_argon2id_hash_and_sign_in_only_with_their_password() {
    assert!(
        veto_store::hash_password(PASSWORD)
            .unwrap()
            .starts_with("$argon2id$")
    );
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let ada = s.add_user("ada", Role::Admin, PASSWORD).await.unwrap();
        assert_eq!(
            (ada.name.as_str(), ada.role, ada.disabled),
            ("ada", Role::Admin, false),
            "{db}"
        );
        assert!(
            matches!(
                s.add_user("ada", Role::Viewer, PASSWORD).await,
                Err(StoreError::Invalid(_))
            ),
            "{db}"
        );
        assert!(
            matches!(
                s.add_user("bob", Role::Viewer, "short").await,
                Err(StoreError::Invalid(_))
            ),
            "{db}"
        );
        assert!(
            matches!(
                s.add_user("no spaces", Role::Viewer, PASSWORD).await,
                Err(StoreError::Invalid(_))
            ),
            "{db}"
        );

        assert_eq!(
            s.verify_user_password("ada", PASSWORD)
                .await
                .unwrap()
                .map(|u| u.id),
            Some(ada.id),
            "{db}"
        );
        assert!(
            s.verify_user_password("ada", "correct horse battery stapl")
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );
        assert!(
            s.verify_user_password("nobody", PASSWORD)
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );

        let new = "another long passphrase";
        let changed = s
            .update_user(
                ada.id,
                UserUpdate {
                    role: Some(Role::Dpo),
                    password: Some(new.into()),
                    disabled: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(changed.role, Role::Dpo, "{db}");
        assert!(
            s.verify_user_password("ada", PASSWORD)
                .await
                .unwrap()
                .is_none(),
            "{db}: the old password is gone"
        );
        assert!(
            s.verify_user_password("ada", new).await.unwrap().is_some(),
            "{db}"
        );
        s.update_user(
            ada.id,
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(
            s.verify_user_password("ada", new).await.unwrap().is_none(),
            "{db}: disabled"
        );
        assert!(
            s.update_user(9999, UserUpdate::default())
                .await
                .unwrap()
                .is_none(),
            "{db}"
        );

        s.add_user("bea", Role::Viewer, PASSWORD).await.unwrap();
        s.add_user("cy", Role::Marketer, PASSWORD).await.unwrap();
        let first = s.users(None, 2).await.unwrap();
        let rest = s.users(first.last().map(|u| u.id), 2).await.unwrap();
        let names: Vec<String> = first.iter().chain(&rest).map(|u| u.name.clone()).collect();
        assert_eq!(names, ["ada", "bea", "cy"], "{db}");
    }
}

async fn record(s: &veto_store::Store, n: usize) {
    for i in 1..=n {
        s.record_staff_action(
            NewStaffAction::new("api-key:veto_abcdefgh", "topics.create")
                .target(format!("topic:t{i}"))
                .detail(json!({"n": i})),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staff_audit_trail_is_a_chain_and_verify_names_an_altered_entry() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        record(s, 4).await;
        let all = s.staff_actions(None, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|a| a.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4],
            "{db}"
        );
        assert_eq!(all[1].detail, json!({"n": 2}), "{db}");
        assert_eq!(s.staff_actions(Some(2), 1).await.unwrap()[0].seq, 3, "{db}");
        let report = s.verify().await.unwrap();
        assert!(report.ok(), "{db}: {report:?}");
        assert_eq!(report.staff_actions, 4, "{db}");

        ts.tamper("UPDATE staff_audit SET actor = 'cli:someone-else' WHERE seq = 2")
            .await;
        let report = s.verify().await.unwrap();
        assert!(!report.ok(), "{db}");
        let p = report.staff_problem.expect("a problem");
        assert_eq!(p.seq, Some(2), "{db}");
        assert!(
            p.problem.contains("staff action #2") && p.problem.contains("altered"),
            "{db}: {}",
            p.problem
        );
        assert!(
            report.problems.is_empty(),
            "{db}: the ledger itself is fine"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_staff_actions_shows_in_the_middle_and_at_the_end() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        record(s, 3).await;
        ts.tamper("DELETE FROM staff_audit WHERE seq = 3").await;
        let p = s
            .verify()
            .await
            .unwrap()
            .staff_problem
            .expect("newest deleted");
        assert!(
            p.problem.contains("newest entries were deleted"),
            "{db}: {}",
            p.problem
        );
    }
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        record(s, 3).await;
        ts.tamper("DELETE FROM staff_audit WHERE seq = 2").await;
        let p = s
            .verify()
            .await
            .unwrap()
            .staff_problem
            .expect("middle deleted");
        assert_eq!(p.seq, Some(3), "{db}");
        assert!(
            p.problem.contains("deleted before it"),
            "{db}: {}",
            p.problem
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_another_request_and_free_a_failed_one() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(
            s.claim_idempotency("key:1", "k", &a).await.unwrap(),
            IdempotencyClaim::New,
            "{db}"
        );
        assert_eq!(
            s.claim_idempotency("key:1", "k", &a).await.unwrap(),
            IdempotencyClaim::InProgress,
            "{db}"
        );
        s.complete_idempotency("key:1", "k", 201, "{\"id\":7}")
            .await
            .unwrap();
        assert_eq!(
            s.claim_idempotency("key:1", "k", &a).await.unwrap(),
            IdempotencyClaim::Replay {
                status: 201,
                body: "{\"id\":7}".into()
            },
            "{db}"
        );
        assert_eq!(
            s.claim_idempotency("key:1", "k", &b).await.unwrap(),
            IdempotencyClaim::Mismatch,
            "{db}"
        );
        // Another caller's key of the same name is its own.
        assert_eq!(
            s.claim_idempotency("key:2", "k", &b).await.unwrap(),
            IdempotencyClaim::New,
            "{db}"
        );
        // A failed first request frees the key; a completed one stays.
        s.release_idempotency("key:2", "k").await.unwrap();
        assert_eq!(
            s.claim_idempotency("key:2", "k", &a).await.unwrap(),
            IdempotencyClaim::New,
            "{db}"
        );
        s.release_idempotency("key:1", "k").await.unwrap();
        assert!(
            matches!(
                s.claim_idempotency("key:1", "k", &a).await.unwrap(),
                IdempotencyClaim::Replay { .. }
            ),
            "{db}"
        );
        // Kept in the store: another handle on it (another node) sees it.
        let again = match &ts.sqlite_path {
            Some(p) => veto_store::Store::open_sqlite(p).await.unwrap(),
            None => continue,
        };
        assert!(
            matches!(
                again.claim_idempotency("key:1", "k", &a).await.unwrap(),
                IdempotencyClaim::Replay { .. }
            ),
            "{db}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_without_secrets_and_revoked_at_once() {
    for ts in helpers::stores().await {
        let (s, db) = (&ts.store, ts.name);
        let k = s.create_api_key(Role::Viewer, None).await.unwrap();
        assert!(s.api_key(&k.key).await.unwrap().is_some(), "{db}");
        let listed = s.api_keys(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1, "{db}");
        assert!(
            format!("{listed:?}").find(&k.key[13..]).is_none(),
            "{db}: no secret"
        );
        let revoked = s.revoke_api_key(k.id).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some(), "{db}");
        assert!(
            s.api_key(&k.key).await.unwrap().is_none(),
            "{db}: revoked keys do not authenticate"
        );
        let again = s.revoke_api_key(k.id).await.unwrap().unwrap();
        assert_eq!(
            again.revoked_at, revoked.revoked_at,
            "{db}: the first revocation stands"
        );
        assert!(s.revoke_api_key(999).await.unwrap().is_none(), "{db}");
    }
}
