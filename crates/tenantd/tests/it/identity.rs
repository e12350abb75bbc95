use crate::common::{spawn_app, Backend, TestApp, ADMIN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tenantd_core::now_secs;
use tenantd_edge::jwt::{generate_signing_key, Claims, Signer, ISSUER};

crate::both! {
    minted_tokens_authenticate_and_bad_ones_do_not;
    authorize_answers_for_the_bearer;
    restart_keeps_everything;
    tenantd_jwts_live_no_longer_than_issued_and_carry_no_crit, "token_ttl_seconds = 300";
}

fn claims(sub: &str, tid: &str, exp_in: i64) -> Claims {
    let now = now_secs();
    Claims {
        iss: ISSUER.into(),
        sub: sub.into(),
        email: "ann@acme.test".into(),
        tid: Some(tid.into()),
        roles: vec!["owner".into()],
        plan: None,
        iat: now,
        nbf: now,
        exp: now + exp_in,
        jti: "t".into(),
        aud: None,
    }
}

async fn minted_tokens_authenticate_and_bad_ones_do_not(app: TestApp) {
    app.tenant("acme", "starter").await;
    let (uid, token) = app.user("acme", "ann@acme.test", "admin").await;
    // Only operators mint, and only for members.
    let (_, key) = app.key("acme", "owner").await;
    app.post(&format!("/v1/tenants/acme/members/{uid}/token"), &key, json!({}))
        .await
        .problem(403, "forbidden");
    app.post("/v1/tenants/acme/members/usr_nobody/token", ADMIN, json!({}))
        .await
        .problem(404, "not_found");
    let minted = app.state.edge.signer().verify(&token).unwrap();
    assert_eq!(
        (minted.sub.as_str(), minted.tid.as_deref(), minted.plan.as_deref()),
        (uid.as_str(), Some("acme"), Some("starter"))
    );
    assert_eq!(minted.roles, ["admin"]);
    assert!(minted.exp - minted.iat <= 900);
    let me = app.get("/v1/me", &token).await.expect(200).body;
    assert_eq!(
        (me["id"].as_str(), me["email"].as_str()),
        (Some(uid.as_str()), Some("ann@acme.test"))
    );
    assert!(
        app.get("/v1/tenants/acme/audit?action=token.minted", ADMIN).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    // Public keys verify it offline.
    let jwks = app
        .call("GET", "/.well-known/jwks.json", None, None, &[])
        .await
        .expect(200)
        .body;
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert!(jwks["keys"][0].get("d").is_none());
    // Expired, not yet valid, tampered, alg none, HS256, and another issuer's key: all 401.
    let signer = app.state.edge.signer();
    let expired = signer.sign(&claims(&uid, "acme", -60));
    let mut early = claims(&uid, "acme", 600);
    early.nbf = now_secs() + 300;
    let early = signer.sign(&early);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&uid, "beta", 600)).unwrap()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let jwk_x = jwks["keys"][0]["x"].as_str().unwrap();
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&uid, "acme", 600),
        &EncodingKey::from_secret(jwk_x.as_bytes()),
    )
    .unwrap();
    let stranger = Signer::new(&[generate_signing_key()], 900)
        .unwrap()
        .sign(&claims(&uid, "acme", 600));
    for (what, t) in [
        ("expired", expired),
        ("early", early),
        ("tampered", tampered),
        ("none", none),
        ("hs256", hs),
        ("stranger", stranger),
    ] {
        let r = app.get("/v1/me", &t).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.body);
        assert_eq!(r.body["code"], "unauthenticated");
    }
    // A member removed since the token was minted no longer gets in.
    app.delete(&format!("/v1/tenants/acme/members/{uid}"), ADMIN)
        .await
        .expect(204);
    app.get("/v1/tenants/acme", &token)
        .await
        .problem(403, "tenant_mismatch");
}

async fn authorize_answers_for_the_bearer(app: TestApp) {
    app.tenant("acme", "free").await;
    app.tenant("beta", "free").await;
    let (_, viewer) = app.user("acme", "v@acme.test", "viewer").await;
    let (_, key) = app.key("acme", "member").await;
    let ask = |t: &'static str, p: &'static str| json!({"tenant_id": t, "permission": p});
    assert_eq!(
        app.post("/v1/authorize", &viewer, ask("acme", "records:read"))
            .await
            .expect(200)
            .body,
        json!({"allowed": true, "role": "viewer"})
    );
    assert_eq!(
        app.post("/v1/authorize", &viewer, ask("acme", "records:write"))
            .await
            .body,
        json!({"allowed": false, "role": "viewer"})
    );
    assert_eq!(
        app.post("/v1/authorize", &key, ask("acme", "records:write")).await.body,
        json!({"allowed": true, "role": "member"})
    );
    assert_eq!(
        app.post("/v1/authorize", &key, ask("acme", "keys:manage")).await.body["allowed"],
        false
    );
    // Other tenants: the same "no" whether or not they exist.
    assert_eq!(
        app.post("/v1/authorize", &key, ask("beta", "records:read")).await.body,
        json!({"allowed": false, "role": null})
    );
    assert_eq!(
        app.post("/v1/authorize", &key, ask("gamma", "records:read")).await.body,
        json!({"allowed": false, "role": null})
    );
    assert_eq!(
        app.post("/v1/authorize", ADMIN, ask("beta", "tenant:delete"))
            .await
            .body["allowed"],
        true
    );
    app.post("/v1/authorize", &key, json!({"tenant_id": "acme"}))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/authorize", &key, ask("acme", "nocolon"))
        .await
        .problem(400, "invalid_request");
    app.post("/v1/authorize", &key, ask("Bad_Id", "x:y"))
        .await
        .problem(400, "invalid_tenant_id");
    app.call("POST", "/v1/authorize", None, Some(ask("acme", "records:read")), &[])
        .await
        .problem(401, "unauthenticated");
}

async fn restart_keeps_everything(app: TestApp) {
    app.tenant("acme", "free").await;
    let (_, key) = app.key("acme", "member").await;
    let (uid, token) = app.user("acme", "ann@acme.test", "admin").await;
    app.post("/v1/tenants/acme/suspend", ADMIN, json!({"reason": "r"}))
        .await
        .expect(200);
    app.post("/v1/tenants/acme/resume", ADMIN, json!({})).await.expect(200);
    app.get("/v1/me", &key).await.expect(200);
    let app = app.restart().await;
    assert_eq!(
        app.get("/v1/tenants/acme", ADMIN).await.expect(200).body["status"],
        "active"
    );
    app.get("/v1/me", &key).await.expect(200);
    // The signing key survived: a token minted before the restart still verifies.
    assert_eq!(app.get("/v1/me", &token).await.expect(200).body["id"], uid.as_str());
    assert_eq!(
        app.get("/v1/tenants/acme/members", ADMIN).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // last_used_at was flushed at shutdown.
    assert!(app.get("/v1/tenants/acme/keys", ADMIN).await.body["items"][0]["last_used_at"].is_string());
}

/// An OpenID provider of our own: an Ed25519 key, its JWKS in a file.
struct Provider {
    kid: String,
    pkcs8: Vec<u8>,
    enc: EncodingKey,
    x: String,
    dir: std::path::PathBuf,
}

impl Provider {
    fn new() -> Self {
        let (kid, pkcs8, x) = generate_signing_key();
        let dir = std::env::temp_dir().join(format!("tenantd-oidc-{kid}").replace(['/', '+', '='], "_"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("jwks.json"),
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x}]})
                .to_string(),
        )
        .unwrap();
        Self {
            kid,
            enc: EncodingKey::from_ed_der(&pkcs8),
            pkcs8,
            x,
            dir,
        }
    }
    fn toml(&self) -> String {
        format!(
            "[oidc]\nissuer = \"https://idp.test\"\naudience = \"tenantd-app\"\njwks_file = \"{}\"\n",
            self.dir.join("jwks.json").display()
        )
    }
    fn id_token(&self, email: &str, aud: &str, exp_in: i64) -> String {
        let now = now_secs();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &json!({"iss": "https://idp.test", "aud": aud, "sub": "ext-1", "email": email, "email_verified": true, "iat": now, "exp": now + exp_in}), &self.enc).unwrap()
    }
}

async fn exchange(app: &TestApp, subject: &str, tenant: Option<&str>) -> crate::common::Reply {
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", subject),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
    ];
    if let Some(t) = tenant {
        form.push(("tenant_id", t));
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/token", app.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap();
    crate::common::Reply { status, headers, body }
}

async fn token_exchange(backend: Backend) {
    let idp = Provider::new();
    let Some(app) = spawn_app(backend, &idp.toml()).await else {
        return;
    };
    app.tenant("acme", "professional").await;
    app.tenant("beta", "free").await;
    app.post(
        "/v1/tenants/acme/members",
        ADMIN,
        json!({"email": "ann@acme.test", "role": "member"}),
    )
    .await
    .expect(201);
    let id_token = idp.id_token("Ann@Acme.test", "tenantd-app", 300);
    // Exchanged without a tenant, and bound to one.
    let t = exchange(&app, &id_token, None).await.expect(200).body;
    assert_eq!(
        (t["token_type"].as_str(), t["issued_token_type"].as_str()),
        (Some("Bearer"), Some("urn:ietf:params:oauth:token-type:jwt"))
    );
    assert!(t["expires_in"].as_i64().unwrap() <= 900);
    let unbound = t["access_token"].as_str().unwrap().to_string();
    let me = app.get("/v1/me", &unbound).await.expect(200).body;
    assert_eq!(me["email"], "ann@acme.test");
    assert_eq!(me["tenants"], json!([{"tenant_id": "acme", "role": "member"}]));
    app.call("GET", "/v1/tenants/acme", Some(&unbound), None, &[])
        .await
        .expect(200);
    app.get("/v1/tenants/beta", &unbound)
        .await
        .problem(403, "tenant_mismatch");
    let bound = exchange(&app, &id_token, Some("acme")).await.expect(200).body;
    let c = app
        .state
        .edge
        .signer()
        .verify(bound["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (c.tid.as_deref(), c.plan.as_deref(), c.roles.clone()),
        (Some("acme"), Some("professional"), vec!["member".to_string()])
    );
    // Not a member: the same answer for a tenant that exists and one that does not.
    exchange(&app, &id_token, Some("beta"))
        .await
        .problem(403, "tenant_mismatch");
    exchange(&app, &id_token, Some("nope"))
        .await
        .problem(403, "tenant_mismatch");
    // Wrong audience, expired, algorithm confusion (HS256 keyed with the public key): refused.
    exchange(&app, &idp.id_token("ann@acme.test", "someone-else", 300), None)
        .await
        .problem(401, "unauthenticated");
    exchange(&app, &idp.id_token("ann@acme.test", "tenantd-app", -120), None)
        .await
        .problem(401, "unauthenticated");
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(idp.kid.clone());
    let now = now_secs();
    let confused = jsonwebtoken::encode(&h, &json!({"iss": "https://idp.test", "aud": "tenantd-app", "sub": "x", "email": "ann@acme.test", "iat": now, "exp": now + 300}), &EncodingKey::from_secret(idp.x.as_bytes())).unwrap();
    exchange(&app, &confused, None).await.problem(401, "unauthenticated");
    // A crit header, even correctly signed by the provider.
    let crit = sign_raw(
        &idp.pkcs8,
        json!({"alg": "EdDSA", "kid": idp.kid, "crit": ["b64"], "b64": true}),
        json!({"iss": "https://idp.test", "aud": "tenantd-app", "sub": "x", "email": "ann@acme.test", "iat": now, "exp": now + 300}),
    );
    exchange(&app, &crit, None).await.problem(401, "unauthenticated");
    // Bad requests.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/token", app.url))
        .form(&[
            ("grant_type", "password"),
            ("subject_token", "x"),
            ("subject_token_type", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // The provider's ID token also works directly as a bearer.
    assert_eq!(
        app.get("/v1/me", &id_token).await.expect(200).body["email"],
        "ann@acme.test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_token_exchange() {
    token_exchange(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_token_exchange() {
    token_exchange(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_needs_configuration() {
    let app = spawn_app(Backend::Sqlite, "").await.unwrap();
    exchange(&app, "a.b.c", None).await.problem(404, "not_found");
}

/// The provider's JWKS fetched from its URL (a real HTTP server on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_a_url() {
    let idp = Provider::new();
    let jwks = std::fs::read_to_string(idp.dir.join("jwks.json")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || async move { jwks }),
    );
    tokio::spawn(async move { axum::serve(listener, server).await.unwrap() });
    let toml = format!("[oidc]\nissuer = \"https://idp.test\"\naudience = \"tenantd-app\"\njwks_url = \"http://{addr}/.well-known/jwks.json\"\n");
    let app = spawn_app(Backend::Sqlite, &toml).await.unwrap();
    let t = exchange(&app, &idp.id_token("ann@acme.test", "tenantd-app", 300), None)
        .await
        .expect(200)
        .body;
    assert!(t["access_token"].is_string());
    // An unreachable JWKS URL is a start-up error naming it.
    let (db, dir) = tenantd_store::testing::fresh_sqlite();
    let args = tenantd::config::ServeArgs {
        database_url: Some(db.as_str().into()),
        data_dir: Some(dir),
        ..Default::default()
    };
    let bad = "[oidc]\nissuer = \"https://idp.test\"\naudience = \"a\"\njwks_url = \"http://127.0.0.1:1/jwks.json\"\n";
    let cfg = tenantd::config::Config::merge(&args, toml::from_str(bad).unwrap(), Some(ADMIN.into())).unwrap();
    let err = tenantd::startup::prepare(cfg)
        .await
        .err()
        .expect("start must fail")
        .to_string();
    assert!(err.contains("oidc") && err.contains("127.0.0.1:1"), "{err}");
}

/// A JWT with exactly this header and these claims, signed with the Ed25519 key `pkcs8`.
fn sign_raw(pkcs8: &[u8], header: serde_json::Value, claims: serde_json::Value) -> String {
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = URL_SAFE_NO_PAD.encode(kp.sign(signed.as_bytes()).as_ref());
    format!("{signed}.{sig}")
}

/// The findings: a tenantd-signed token with `exp` in the year 9999 was accepted, and an
/// unknown `crit` header ignored. `exp - iat` may not pass `token_ttl_seconds` (plus 5 s),
/// and a `crit` header is refused.
async fn tenantd_jwts_live_no_longer_than_issued_and_carry_no_crit(app: TestApp) {
    app.tenant("acme", "starter").await;
    let (uid, _) = app.user("acme", "ann@acme.test", "admin").await;
    let signer = app.state.edge.signer();
    let mut forever = claims(&uid, "acme", 0);
    forever.exp = 253_402_300_799;
    let r = app
        .get("/v1/me", &signer.sign(&forever))
        .await
        .problem(401, "unauthenticated");
    assert!(r.body["detail"].as_str().unwrap().contains("lifetime"), "{}", r.body);
    app.get("/v1/me", &signer.sign(&claims(&uid, "acme", 300)))
        .await
        .expect(200);
    app.get("/v1/me", &signer.sign(&claims(&uid, "acme", 305)))
        .await
        .expect(200);
    app.get("/v1/me", &signer.sign(&claims(&uid, "acme", 306)))
        .await
        .problem(401, "unauthenticated");
    // What the server mints itself stays within its ttl.
    let minted = app.token_for("acme", &uid).await;
    let c = signer.verify(&minted).unwrap();
    assert_eq!(c.exp - c.iat, 300);
    // crit, signed with the server's own current key: refused; without it, accepted.
    let mut key = app.state.catalog.signing_keys().await.unwrap().pop().unwrap();
    // Stored sealed under the master key.
    key.private_pkcs8 = tenantd::keyring::open_own(
        app.state.keyring.master(),
        &format!("signing-key/{}", key.kid),
        &key.private_pkcs8,
    )
    .unwrap()
    .expect("the signing key is stored sealed");
    let body = serde_json::to_value(claims(&uid, "acme", 60)).unwrap();
    let crit = sign_raw(
        &key.private_pkcs8,
        json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid, "crit": ["exp"]}),
        body.clone(),
    );
    let r = app.get("/v1/me", &crit).await.problem(401, "unauthenticated");
    assert!(r.body["detail"].as_str().unwrap().contains("crit"), "{}", r.body);
    let plain = sign_raw(
        &key.private_pkcs8,
        json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid}),
        body,
    );
    app.get("/v1/me", &plain).await.expect(200);
}

/// The finding: every deployment's signing key had the kid `initial`. Each has a random
/// one; a deployment still on its `initial` key gets a new one at start, and tokens the
/// old key signed keep verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_have_random_kids() {
    let kid_of = |jwks: &serde_json::Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let jwks = |app: &TestApp| {
        let url = format!("{}/.well-known/jwks.json", app.url);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let a = spawn_app(Backend::Sqlite, "").await.unwrap();
    let b = spawn_app(Backend::Sqlite, "").await.unwrap();
    let (ka, kb) = (kid_of(&jwks(&a).await), kid_of(&jwks(&b).await));
    assert_eq!((ka.len(), kb.len()), (1, 1));
    assert_ne!(ka, kb);
    for k in ka.iter().chain(&kb) {
        assert!(k != "initial" && k.len() >= 16, "{k}");
    }
    // A catalog from before: its one key is `initial`.
    let (db, dir) = tenantd_store::testing::fresh_sqlite();
    let c = tenantd_store::SqlCatalog::connect(&db).await.unwrap();
    tenantd_store::Catalog::migrate(&c).await.unwrap();
    let (_, pkcs8, x) = generate_signing_key();
    let old = tenantd_store::SigningKeyRecord {
        kid: "initial".into(),
        private_pkcs8: pkcs8.clone(),
        public_x: x.clone(),
        created_at: now_secs() - 86_400,
        generation: 1,
    };
    tenantd_store::SigningKeyStore::add_signing_key(&c, &old).await.unwrap();
    let app = crate::common::start_with(db, dir, String::new(), axum::Router::new()).await;
    let kids = kid_of(&jwks(&app).await);
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[0], "initial");
    // The key that was stored in the clear is sealed now.
    let stored = app.state.catalog.signing_keys().await.unwrap();
    assert!(
        stored.iter().all(|k| k.private_pkcs8.starts_with(b"TDS1")),
        "a signing key left in the clear"
    );
    app.tenant("acme", "free").await;
    let (uid, minted) = app.user("acme", "ann@acme.test", "member").await;
    let head: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(minted.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(head["kid"], kids[1].as_str(), "the new key signs");
    let by_old = Signer::new(&[("initial".into(), pkcs8, x)], 900).unwrap();
    app.get("/v1/me", &by_old.sign(&claims(&uid, "acme", 60)))
        .await
        .expect(200);
}
