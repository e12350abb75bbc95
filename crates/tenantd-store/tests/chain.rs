//! The event log's hash chains in the database, on both backends: appends link, every
//! kind of tampering is caught at its `seq`, checkpoints are checked against their key,
//! and concurrent writers on two nodes leave one chain without forks or gaps.
use tenantd_core::TenantId;
use tenantd_store::chain::{self, Checkpoint};
use tenantd_store::prelude::*;
use tenantd_store::testing::{drop_postgres, postgres_catalog};
use tenantd_store::{AuditFilter, NewEvent, SqlCatalog};

tenantd_store::both_catalogs! {
    case_appends_link_into_one_chain_per_tenant => sqlite_appends_link_into_one_chain_per_tenant, postgres_appends_link_into_one_chain_per_tenant;
    case_tampering_is_caught_at_its_seq => sqlite_tampering_is_caught_at_its_seq, postgres_tampering_is_caught_at_its_seq;
    case_checkpoints_verify_with_their_key_only => sqlite_checkpoints_verify_with_their_key_only, postgres_checkpoints_verify_with_their_key_only;
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

async fn write(c: &SqlCatalog, tenant: Option<&str>, n: usize) {
    for i in 0..n {
        c.record_event(&NewEvent::new(
            tenant.map(tid).as_ref(),
            "operator",
            "tenant.updated",
            serde_json::json!({"i": i, "text": "é\u{1}\"x"}),
            &format!("req_{i}"),
        ))
        .await
        .unwrap();
    }
}

async fn events(c: &SqlCatalog, chain: &str) -> Vec<tenantd_store::AuditEvent> {
    c.chain_events(chain, &AuditFilter::default(), 0, 10_000).await.unwrap()
}

/// Each tenant's events and the platform's form chains of their own, from seq 1, each
/// event's digest the SHA-256 of its canonical content and its hash linking to the one
/// before.
async fn case_appends_link_into_one_chain_per_tenant(c: &SqlCatalog) {
    write(c, Some("acme"), 5).await;
    write(c, None, 3).await;
    write(c, Some("beta"), 2).await;
    write(c, Some("acme"), 2).await;
    let acme = events(c, "acme").await;
    assert_eq!(
        acme.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(acme[0].prev_hash, chain::GENESIS);
    for w in acme.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    let first = &acme[0];
    assert_eq!(first.digest, first.content().unwrap().digest());
    assert_eq!(first.hash, chain::link(chain::GENESIS, &first.digest));
    assert_eq!(c.verify_chain("acme").await.unwrap().unwrap().events, 7);
    assert_eq!(c.verify_chain("beta").await.unwrap().unwrap().events, 2);
    let platform = c.verify_chain("").await.unwrap().unwrap();
    assert_eq!(platform.events, 3);
    assert_eq!(events(c, "").await.last().unwrap().hash, platform.head.unwrap().1);
    assert!(
        c.chains().await.unwrap().starts_with(&["".to_string()]),
        "the platform's first"
    );
}

/// Editing, deleting or inserting one row makes verification fail at that seq.
async fn case_tampering_is_caught_at_its_seq(c: &SqlCatalog) {
    write(c, Some("acme"), 8).await;
    let run = |sql: &'static str| async move {
        sqlx::query(sql).execute(c.pool()).await.unwrap();
    };
    let bad = || async { c.verify_chain("acme").await.unwrap().unwrap_err() };
    // Edited data.
    let original: String = sqlx::query_scalar("SELECT detail FROM audit_events WHERE chain = 'acme' AND seq = 4")
        .fetch_one(c.pool())
        .await
        .unwrap();
    run("UPDATE audit_events SET detail = '{\"i\": 99}' WHERE chain = 'acme' AND seq = 4").await;
    let b = bad().await;
    assert_eq!(b.first_bad_seq, 4, "{b:?}");
    assert!(b.reason.contains("digest"), "{b:?}");
    sqlx::query("UPDATE audit_events SET detail = $1 WHERE chain = 'acme' AND seq = 4")
        .bind(&original)
        .execute(c.pool())
        .await
        .unwrap();
    assert!(c.verify_chain("acme").await.unwrap().is_ok(), "restored");
    // An edited actor or time is content too.
    run("UPDATE audit_events SET at = at + 1 WHERE chain = 'acme' AND seq = 2").await;
    assert_eq!(bad().await.first_bad_seq, 2);
    run("UPDATE audit_events SET at = at - 1 WHERE chain = 'acme' AND seq = 2").await;
    // Inserted: a copy of event 3 put in as seq 6, the later ones moved up.
    run("UPDATE audit_events SET seq = seq + 100 WHERE chain = 'acme' AND seq >= 6").await;
    run("UPDATE audit_events SET seq = seq - 99 WHERE chain = 'acme' AND seq >= 106").await;
    run(
        "INSERT INTO audit_events (event_id, at, tenant_id, actor_type, actor, action, detail, request_id, chain, seq, digest, prev_hash, hash) \
         SELECT 'evt_forged', at, tenant_id, actor_type, actor, action, detail, request_id, chain, 6, digest, prev_hash, hash \
         FROM audit_events WHERE chain = 'acme' AND seq = 3",
    )
    .await;
    assert_eq!(bad().await.first_bad_seq, 6);
    run("DELETE FROM audit_events WHERE event_id = 'evt_forged'").await;
    run("UPDATE audit_events SET seq = seq + 100 WHERE chain = 'acme' AND seq >= 7").await;
    run("UPDATE audit_events SET seq = seq - 101 WHERE chain = 'acme' AND seq >= 107").await;
    assert!(c.verify_chain("acme").await.unwrap().is_ok(), "restored");
    // Deleted: a gap at that seq, and at the end the head no longer matches.
    run("DELETE FROM audit_events WHERE chain = 'acme' AND seq = 5").await;
    let b = bad().await;
    assert_eq!(b.first_bad_seq, 5, "{b:?}");
    run("DELETE FROM audit_events WHERE chain = 'acme' AND seq >= 5").await;
    let b = bad().await;
    assert_eq!(b.first_bad_seq, 5, "{b:?}");
    assert!(b.reason.contains("head"), "{b:?}");
}

/// A checkpoint verifies with the key that signed it, not with another, and not once the
/// event it names is changed.
async fn case_checkpoints_verify_with_their_key_only(c: &SqlCatalog) {
    use base64::Engine;
    use ring::signature::KeyPair;
    write(c, Some("acme"), 3).await;
    let rng = ring::rand::SystemRandom::new();
    let pair = || {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let (mine, other) = (pair(), pair());
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = |k: &ring::signature::Ed25519KeyPair| serde_json::json!({"keys": [{"kid": "k1", "x": b64(k.public_key().as_ref())}]});
    let heads = c.heads_to_checkpoint().await.unwrap();
    assert_eq!(heads.len(), 1);
    let (tenant, seq, hash) = heads[0].clone();
    assert_eq!((tenant.as_ref().map(|t| t.as_str()), seq), (Some("acme"), 3));
    let at = "2026-12-07T12:00:00Z";
    let msg = Checkpoint::signed_bytes(Some("acme"), seq, &hash, at, "k1");
    c.add_checkpoint(&Checkpoint {
        tenant_id: Some("acme".into()),
        seq,
        hash,
        at: at.into(),
        kid: "k1".into(),
        signature: b64(mine.sign(&msg).as_ref()),
    })
    .await
    .unwrap();
    assert!(c.heads_to_checkpoint().await.unwrap().is_empty(), "nothing moved since");
    let (v, cp) = c.verify_checkpointed("acme", &jwks(&mine)).await.unwrap().unwrap();
    assert_eq!((v.events, cp.unwrap().seq), (3, 3));
    let b = c.verify_checkpointed("acme", &jwks(&other)).await.unwrap().unwrap_err();
    assert_eq!(b.first_bad_seq, 3);
    assert!(b.reason.contains("signature"), "{b:?}");
    // Re-chained from seq 2 on (a rewrite that keeps the links): the checkpoint catches it.
    let rows = events(c, "acme").await;
    let mut prev = rows[0].hash.clone();
    for e in &rows[1..] {
        let mut content = e.content().unwrap();
        content.data = serde_json::json!({"rewritten": true});
        let digest = content.digest();
        let hash = chain::link(&prev, &digest);
        sqlx::query("UPDATE audit_events SET detail = $1, digest = $2, prev_hash = $3, hash = $4 WHERE chain = 'acme' AND seq = $5")
            .bind(content.data.to_string())
            .bind(&digest)
            .bind(&prev)
            .bind(&hash)
            .bind(e.seq)
            .execute(c.pool())
            .await
            .unwrap();
        prev = hash;
    }
    sqlx::query("UPDATE event_chains SET hash = $1 WHERE chain = 'acme'")
        .bind(&prev)
        .execute(c.pool())
        .await
        .unwrap();
    assert!(c.verify_chain("acme").await.unwrap().is_ok(), "the links alone hold");
    let b = c.verify_checkpointed("acme", &jwks(&mine)).await.unwrap().unwrap_err();
    assert_eq!(b.first_bad_seq, 3, "{b:?}");
}

/// 8 writers over 2 nodes (two catalogs on one database) append to one tenant's chain and
/// the platform's at once: each chain is whole, from seq 1, with no fork and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_on_two_nodes_leave_valid_chains() {
    let Some((c, url)) = postgres_catalog("postgres_concurrent_writers_on_two_nodes_leave_valid_chains").await else {
        return;
    };
    let other = SqlCatalog::connect(&url).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..8 {
        let node = if w % 2 == 0 { c.clone() } else { other.clone() };
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                let tenant = (i % 4 != 0).then(|| tid("busy"));
                let mut u = node.begin().await.unwrap();
                u.append(&NewEvent::new(
                    tenant.as_ref(),
                    "operator",
                    "tenant.updated",
                    serde_json::json!({"w": w, "i": i}),
                    "",
                ))
                .await
                .unwrap();
                u.commit().await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let busy = c.verify_chain("busy").await.unwrap().unwrap();
    let platform = c.verify_chain("").await.unwrap().unwrap();
    assert_eq!((busy.events, platform.events), (240, 80));
    other.pool().close().await;
    drop_postgres(c, &url).await;
}
