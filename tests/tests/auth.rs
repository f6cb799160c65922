//! The authentication edge (issue 16): the local runner checks tokens as API Gateway's JWT authorizer does and
//! answers as it does (`401 {"message":"Unauthorized"}`, `403 {"message":"Forbidden"}`), writing nothing; the
//! handlers refuse what no authorizer let through; the one route/scope table is what `template.yaml` and
//! `openapi.yaml` declare; the local issuer grants client-credentials tokens that the runner accepts.

use std::collections::{BTreeSet, HashMap};

use imgpipe_core::auth::{ROUTES, Scope, TenantId};
use imgpipe_core::bson::doc;
use imgpipe_local::authorizer::Authorizer;
use imgpipe_local::issuer::LocalIssuer;
use imgpipe_tests::{Runner, Stack, TEST_TENANT, issuer};
use serde_json::{Value, json};

const UNAUTHORIZED: &[u8] = br#"{"message":"Unauthorized"}"#;
const FORBIDDEN: &[u8] = br#"{"message":"Forbidden"}"#;
const SOME_ID: &str = "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b";
const CSV: &str = "S. No.,Product Name,Input Image Urls\n1,Hat,http://127.0.0.1:9/hat.jpg\n";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token of the test issuer, for the test tenant with `scopes`, after `edit` changed its claims.
fn token_with(scopes: &[Scope], edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = issuer().claims(TEST_TENANT, scopes);
    edit(claims.as_object_mut().unwrap());
    issuer().sign(&claims)
}

fn all_scopes() -> Vec<Scope> {
    Scope::ALL.to_vec()
}

/// Another issuer's key (own directory, own key): its tokens name a key id the runner does not know.
fn stranger() -> LocalIssuer {
    let dir = std::env::temp_dir().join(format!("imgpipe-stranger-{}", uuid::Uuid::new_v4().simple()));
    let stranger = LocalIssuer::open(&dir, issuer().issuer(), issuer().audience()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    stranger
}

/// A JWT's three parts.
fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

fn b64(json: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
}

/// Every way a token can be missing or invalid, with the `Authorization` header that carries it.
fn invalid_tokens() -> Vec<(&'static str, Option<String>)> {
    let bearer = |t: String| Some(format!("Bearer {t}"));
    let valid = token_with(&all_scopes(), |_| {});
    let valid_parts = parts(&valid);
    let mut flipped = valid_parts.clone();
    let mid = flipped[2].len() / 2;
    let c = if &flipped[2][mid..=mid] == "A" { "B" } else { "A" };
    flipped[2].replace_range(mid..=mid, c);
    let mut other_tenant = issuer().claims("someone-else", &all_scopes());
    other_tenant["exp"] = json!(now() + 7200);
    let stranger = stranger();
    let strangers = stranger.access_token(TEST_TENANT, &all_scopes());
    let mut our_kid_their_signature = parts(&strangers);
    our_kid_their_signature[0] = parts(&valid)[0].clone();
    vec![
        ("no Authorization header", None),
        ("an empty bearer", Some("Bearer ".into())),
        ("not a JWT", bearer("not-a-jwt".into())),
        ("three garbage parts", bearer("a.b.c".into())),
        (
            "expired",
            bearer(token_with(&all_scopes(), |c| {
                c.insert("iat".into(), json!(now() - 7200));
                c.insert("exp".into(), json!(now() - 10));
            })),
        ),
        (
            "not valid yet (nbf)",
            bearer(token_with(&all_scopes(), |c| {
                c.insert("nbf".into(), json!(now() + 600));
            })),
        ),
        (
            "issued in the future (iat)",
            bearer(token_with(&all_scopes(), |c| {
                c.insert("iat".into(), json!(now() + 600));
            })),
        ),
        (
            "without exp",
            bearer(token_with(&all_scopes(), |c| {
                c.remove("exp");
            })),
        ),
        (
            "wrong audience",
            bearer(token_with(&all_scopes(), |c| {
                c.insert("aud".into(), json!("another-api"));
            })),
        ),
        (
            "no aud, client_id not an audience",
            bearer(token_with(&all_scopes(), |c| {
                c.remove("aud");
            })),
        ),
        (
            "wrong issuer",
            bearer(token_with(&all_scopes(), |c| {
                c.insert("iss".into(), json!("https://issuer.example"));
            })),
        ),
        ("tampered payload", bearer(format!("{}.{}.{}", valid_parts[0], b64(&other_tenant), valid_parts[2]))),
        ("tampered signature", bearer(flipped.join("."))),
        ("unknown key id", bearer(strangers)),
        ("our key id, another key's signature", bearer(our_kid_their_signature.join("."))),
        (
            "no key id",
            bearer({
                let header = b64(&json!({"alg": "RS256", "typ": "JWT"}));
                format!("{header}.{}.{}", valid_parts[1], valid_parts[2])
            }),
        ),
        ("alg none", bearer(format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), valid_parts[1]))),
        (
            "HS256",
            bearer({
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                header.kid = Some(issuer().kid().to_string());
                let claims = issuer().claims(TEST_TENANT, &all_scopes());
                jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(b"guess").unwrap())
                    .unwrap()
            }),
        ),
        ("Basic instead of Bearer", Some(format!("Basic {valid}"))),
    ]
}

/// A route's path with a request id in place of `{requestId}`.
fn concrete(path: &str) -> String {
    path.replace("{requestId}", SOME_ID)
}

/// Calls `method path` on `runner` (a CSV body for POSTs) with `authorization`: status, headers, body.
async fn call(
    runner: &Runner,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut request = http.request(method.parse().unwrap(), format!("{}{path}", runner.url));
    if method == "POST" {
        request = request.header("content-type", "text/csv").body(CSV);
    }
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("the local runner answers");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// Nothing of an upload anywhere: MongoDB, both buckets, the queue.
async fn assert_nothing_written(stack: &Stack, case: &str) {
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 0, "{case}: Requests written");
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 0, "{case}: RequestData written");
    assert_eq!(stack.keys(&stack.app.config.uploads_bucket, "").await, Vec::<String>::new(), "{case}: CSV stored");
    assert_eq!(stack.keys(&stack.app.config.outputs_bucket, "").await, Vec::<String>::new(), "{case}: output");
    assert_eq!(stack.queue_depth().await, 0, "{case}: messages sent");
}

/// Checks API Gateway's refusal: the status, exactly its body, JSON, and a Bearer challenge.
fn assert_refused(case: &str, answer: &(u16, reqwest::header::HeaderMap, Vec<u8>), status: u16, body: &[u8]) {
    let (code, headers, bytes) = answer;
    assert_eq!((*code, bytes.as_slice()), (status, body), "{case}: {}", String::from_utf8_lossy(bytes));
    assert_eq!(headers.get("content-type").unwrap(), "application/json", "{case}");
    let challenge = headers.get("www-authenticate").map(|v| v.to_str().unwrap()).unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{case}: www-authenticate `{challenge}`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_a_missing_or_invalid_token_with_401_and_nothing_is_written() {
    let stack = Stack::new("auth401").await;
    let runner = Runner::start(&stack, 0).await;
    let tokens = invalid_tokens();
    for route in ROUTES {
        let path = concrete(route.path);
        for (case, authorization) in &tokens {
            let answer = call(&runner, route.method, &path, authorization.as_deref()).await;
            assert_refused(&format!("{} {path}, {case}", route.method), &answer, 401, UNAUTHORIZED);
        }
    }
    assert_nothing_written(&stack, "invalid tokens").await;

    // Control: the same upload with a valid token is taken, so a refusal above was the token's doing.
    let valid = format!("Bearer {}", token_with(&all_scopes(), |_| {}));
    let (code, _, body) = call(&runner, "POST", "/uploads", Some(&valid)).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_routes_scope_is_403_and_nothing_is_written() {
    let stack = Stack::new("auth403").await;
    let runner = Runner::start(&stack, 0).await;
    let bearer = |scopes: &[Scope]| format!("Bearer {}", token_with(scopes, |_| {}));
    let no_scope_claim = format!(
        "Bearer {}",
        token_with(&[], |c| {
            c.remove("scope");
        })
    );
    for route in ROUTES {
        let path = concrete(route.path);
        let wrong: &[Scope] = if route.method == "POST" { &[Scope::Read, Scope::Admin] } else { &[Scope::Upload] };
        for (case, authorization) in [("wrong scopes", bearer(wrong)), ("no scope claim", no_scope_claim.clone())] {
            let case = format!("{} {path}, {case}", route.method);
            let answer = call(&runner, route.method, &path, Some(&authorization)).await;
            assert_refused(&case, &answer, 403, FORBIDDEN);
            let challenge = answer.1.get("www-authenticate").unwrap().to_str().unwrap();
            assert!(challenge.contains("insufficient_scope"), "{case}: {challenge}");
        }
    }
    assert_nothing_written(&stack, "read-only tokens").await;

    // Read scope reads, admin scope reads, upload scope uploads.
    for scopes in [&[Scope::Read][..], &[Scope::Admin]] {
        let (code, _, body) = call(&runner, "GET", "/requests", Some(&bearer(scopes))).await;
        assert_eq!(code, 200, "{scopes:?}: {}", String::from_utf8_lossy(&body));
    }
    let (code, _, _) = call(&runner, "POST", "/uploads", Some(&bearer(&[Scope::Upload]))).await;
    assert_eq!(code, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_valid_tenant_claim_is_403_and_the_claim_is_configurable() {
    let stack = Stack::new("authtenant").await;
    let runner = Runner::start(&stack, 0).await;
    let too_long = "a".repeat(TenantId::MAX_LEN + 1);
    let cases: Vec<(&str, String)> = vec![
        (
            "no client_id",
            token_with(&all_scopes(), |c| {
                c.remove("client_id");
            }),
        ),
        (
            "upper case",
            token_with(&all_scopes(), |c| {
                c.insert("client_id".into(), json!("Acme"));
            }),
        ),
        (
            "a path",
            token_with(&all_scopes(), |c| {
                c.insert("client_id".into(), json!("../acme"));
            }),
        ),
        (
            "64 characters",
            token_with(&all_scopes(), |c| {
                c.insert("client_id".into(), json!(too_long));
            }),
        ),
    ];
    for route in ROUTES {
        let path = concrete(route.path);
        for (case, token) in &cases {
            let answer = call(&runner, route.method, &path, Some(&format!("Bearer {token}"))).await;
            assert_refused(&format!("{} {path}, {case}", route.method), &answer, 403, FORBIDDEN);
        }
    }
    assert_nothing_written(&stack, "tokens without a tenant").await;

    // IMGPIPE_TENANT_CLAIM names another claim: a token with it passes, one with only client_id does not.
    let custom = Stack::with("authclaim", |c| c.tenant_claim = "custom:tenant".into()).await;
    let runner = Runner::start(&custom, 0).await;
    let with_claim = token_with(&all_scopes(), |c| {
        c.insert("custom:tenant".into(), json!("acme-eu"));
    });
    let (code, _, body) = call(&runner, "POST", "/uploads", Some(&format!("Bearer {with_claim}"))).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let without = token_with(&all_scopes(), |_| {});
    let answer = call(&runner, "POST", "/uploads", Some(&format!("Bearer {without}"))).await;
    assert_refused("only client_id", &answer, 403, FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_refuse_requests_that_no_authorizer_let_through() {
    let stack = Stack::new("authhandler").await;
    let request = |method: &str, path: &str| {
        let body = if method == "POST" { lambda_http::Body::from(CSV) } else { lambda_http::Body::Empty };
        http::Request::builder().method(method).uri(path).header("content-type", "text/csv").body(body).unwrap()
    };
    let call = async |route: &imgpipe_core::auth::Route, req: lambda_http::Request| {
        let response = if route.method == "POST" {
            imgpipe_upload::handle(&stack.app, req).await
        } else {
            imgpipe_status::handle(&stack.app, req).await
        };
        (response.status().as_u16(), response.body().to_vec())
    };
    let tenant = TenantId::parse("acme").unwrap();
    for route in ROUTES {
        let path = concrete(route.path);
        // A bearer header is no identity: only the authorizer's context is.
        let bare = request(route.method, &path);
        let (code, body) = call(route, bare).await;
        assert_eq!((code, body.as_slice()), (401, UNAUTHORIZED), "{} {path}: no authorizer context", route.method);
        let wrong = if route.method == "POST" { Scope::Read } else { Scope::Upload };
        let req = imgpipe_identity::as_caller(request(route.method, &path), "client_id", &tenant, &[wrong]);
        let (code, body) = call(route, req).await;
        assert_eq!((code, body.as_slice()), (403, FORBIDDEN), "{} {path}: without its scope", route.method);
        let claims = HashMap::from([("client_id".to_string(), "Not A Tenant".to_string())]);
        let req = imgpipe_identity::with_jwt(request(route.method, &path), claims, vec![route.scopes[0].to_string()]);
        let (code, body) = call(route, req).await;
        assert_eq!((code, body.as_slice()), (403, FORBIDDEN), "{} {path}: invalid tenant", route.method);
    }
    assert_nothing_written(&stack, "handlers without identity").await;
}

#[test]
fn the_audience_is_aud_when_present_else_client_id_and_claims_pass_on_as_api_gateway_passes_them() {
    let issuer = issuer();
    let authorizer = Authorizer::new(issuer.issuer(), &["app-client-1".to_string()], &issuer.jwks());
    let validate = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = issuer.claims("app-client-1", &[Scope::Read]);
        edit(claims.as_object_mut().unwrap());
        authorizer.validate(Some(format!("Bearer {}", issuer.sign(&claims)).as_bytes()))
    };
    let jwt = validate(&|c| {
        c.remove("aud");
    })
    .expect("client_id in the audience list, no aud");
    assert_eq!(jwt.claims["client_id"], "app-client-1");
    assert!(validate(&|_| {}).is_err(), "aud present and not in the list: client_id is not looked at");
    let jwt = validate(&|c| {
        c.insert("aud".into(), json!(["other", "app-client-1"]));
        c.insert("scope".into(), json!("imgpipe/read openid"));
    })
    .expect("one of the aud list is an audience");
    assert_eq!(jwt.claims["aud"], "[other app-client-1]", "lists as API Gateway passes them");
    assert!(jwt.claims["exp"].parse::<u64>().unwrap() > now(), "numbers as strings");
    assert_eq!(jwt.scopes, ["imgpipe/read", "openid"]);
    let jwt = validate(&|c| {
        c.remove("aud");
        c.remove("scope");
        c.insert("scp".into(), json!(["imgpipe/upload"]));
    })
    .unwrap();
    assert_eq!(jwt.scopes, ["imgpipe/upload"], "scp when there is no scope claim");
    assert!(authorizer.validate(Some(b"Bearer")).is_err() && authorizer.validate(None).is_err());

    // The runner's own scope check (the handlers check again): a read token may not upload; no API path, no check.
    let local = issuer.authorizer();
    let read = format!("Bearer {}", issuer.access_token(TEST_TENANT, &[Scope::Read]));
    let denied = local.authorize("POST", "/uploads", Some(read.as_bytes())).unwrap_err();
    assert_eq!(denied.body(), json!({"message": "Forbidden"}));
    assert!(local.authorize("GET", "/requests", Some(read.as_bytes())).unwrap().is_some());
    assert_eq!(local.authorize("GET", "/elsewhere", None), Ok(None), "not an API route: API Gateway's 404");
}

/// The `(method, path) -> scopes` pairs of `template.yaml`'s HttpApi events.
fn template_routes() -> BTreeSet<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    let template = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
    let api = &template["Resources"]["HttpApi"]["Properties"]["Auth"];
    assert!(api["DefaultAuthorizer"].as_str().is_some(), "the HttpApi has a default authorizer");
    let mut routes = BTreeSet::new();
    for (name, resource) in template["Resources"].as_hash().unwrap() {
        for (event, e) in resource["Properties"]["Events"].as_hash().into_iter().flatten() {
            if e["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            let p = &e["Properties"];
            let case = format!("{}.{}", name.as_str().unwrap(), event.as_str().unwrap());
            assert!(p["Auth"]["Authorizer"].as_str() != Some("NONE"), "{case} opts out of the authorizer");
            let scopes = p["Auth"]["AuthorizationScopes"].as_vec().unwrap_or_else(|| panic!("{case}: no scopes"));
            let mut scopes: Vec<String> = scopes.iter().map(|s| s.as_str().unwrap().to_string()).collect();
            scopes.sort();
            routes.insert((p["Method"].as_str().unwrap().to_string(), p["Path"].as_str().unwrap().to_string(), scopes));
        }
    }
    routes
}

/// The same pairs from `openapi.yaml`'s `security` of each operation, checking each documents 401 and 403.
fn openapi_routes() -> BTreeSet<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let spec = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_hash().unwrap() {
        for (method, op) in item.as_hash().unwrap() {
            let case = format!("{} {}", method.as_str().unwrap(), path.as_str().unwrap());
            for code in ["401", "403"] {
                assert!(!op["responses"][code].is_badvalue(), "{case} does not document {code}");
            }
            let mut scopes: Vec<String> = op["security"]
                .as_vec()
                .unwrap_or_else(|| panic!("{case}: no security"))
                .iter()
                .flat_map(|requirement| requirement["oauth2"].as_vec().cloned().unwrap_or_default())
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            scopes.sort();
            routes.insert((method.as_str().unwrap().to_uppercase(), path.as_str().unwrap().to_string(), scopes));
        }
    }
    routes
}

#[test]
fn template_and_openapi_declare_the_routes_and_scopes_of_the_code() {
    let code: BTreeSet<(String, String, Vec<String>)> = ROUTES
        .iter()
        .map(|r| {
            let mut scopes: Vec<String> = r.scopes.iter().map(|s| s.as_str().to_string()).collect();
            scopes.sort();
            (r.method.to_string(), r.path.to_string(), scopes)
        })
        .collect();
    assert_eq!(template_routes(), code, "template.yaml's AuthorizationScopes differ from core::auth::ROUTES");
    assert_eq!(openapi_routes(), code, "openapi.yaml's security differs from core::auth::ROUTES");
}

/// `POST /oauth2/token` with `form`, authenticated by Basic `basic` if given.
async fn grant(runner: &Runner, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut request = http
        .post(format!("{}/oauth2/token", runner.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_token_endpoint_grants_client_credentials_tokens_the_api_accepts() {
    let stack = Stack::new("authgrant").await;
    let runner = Runner::start(&stack, 0).await;
    let tenant = TenantId::parse(&format!("grant-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])).unwrap();
    let client = issuer().register(&tenant, &[Scope::Upload, Scope::Read]).unwrap();
    assert_eq!(issuer().register(&tenant, &[Scope::Admin]).unwrap(), client, "registering again changes nothing");
    let (id, secret) = (client.client_id.as_str(), client.client_secret.as_str());
    let cc = ("grant_type", "client_credentials");

    let (code, granted) = grant(&runner, Some((id, secret)), &[cc]).await;
    assert_eq!(code, 200, "{granted}");
    assert_eq!((granted["token_type"].as_str(), granted["expires_in"].as_u64()), (Some("Bearer"), Some(3600)));
    let token = format!("Bearer {}", granted["access_token"].as_str().unwrap());
    let (code, _, _) = call(&runner, "POST", "/uploads", Some(&token)).await;
    assert_eq!(code, 202, "the client's own scopes by default");

    let (code, granted) =
        grant(&runner, None, &[cc, ("client_id", id), ("client_secret", secret), ("scope", "imgpipe/read")]).await;
    assert_eq!(code, 200, "form authentication: {granted}");
    let token = format!("Bearer {}", granted["access_token"].as_str().unwrap());
    assert_eq!(call(&runner, "GET", "/requests", Some(&token)).await.0, 200);
    assert_eq!(call(&runner, "POST", "/uploads", Some(&token)).await.0, 403, "only the scope asked for");

    for (case, basic, form, status, error) in [
        ("wrong secret", Some((id, "wrong")), vec![cc], 401, "invalid_client"),
        ("unknown client", Some(("nobody", secret)), vec![cc], 401, "invalid_client"),
        ("no client", None, vec![cc], 401, "invalid_client"),
        ("password grant", Some((id, secret)), vec![("grant_type", "password")], 400, "unsupported_grant_type"),
        ("no grant type", Some((id, secret)), vec![], 400, "invalid_request"),
        ("a scope it lacks", Some((id, secret)), vec![cc, ("scope", "imgpipe/admin")], 400, "invalid_scope"),
        (
            "both Basic and form",
            Some((id, secret)),
            vec![cc, ("client_id", id), ("client_secret", secret)],
            400,
            "invalid_request",
        ),
    ] {
        let (code, body) = grant(&runner, basic, &form).await;
        assert_eq!((code, body["error"].as_str()), (status, Some(error)), "{case}: {body}");
        assert!(body.get("access_token").is_none(), "{case}");
    }

    // The served key set is the one the tokens verify against.
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}/.well-known/jwks.json", runner.url)).await.unwrap().json().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].common.key_id.as_deref(), Some(issuer().kid()));
    let served = Authorizer::new(issuer().issuer(), &["imgpipe".to_string()], &jwks);
    let jwt = served.validate(Some(token.as_bytes())).expect("a granted token verifies against the served keys");
    assert_eq!(jwt.claims["client_id"], tenant.as_str());
    assert_eq!(jwt.claims["token_use"], "access");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tenants_are_registered_once() {
    let stack = Stack::new("authtenants").await;
    let tenant = TenantId::parse("acme").unwrap();
    assert!(imgpipe_local::tenants::register_tenant(&stack.app.config, &tenant).await.unwrap(), "new");
    assert!(!imgpipe_local::tenants::register_tenant(&stack.app.config, &tenant).await.unwrap(), "not new");
    let tenants = stack.db.collection::<imgpipe_core::bson::Document>("Tenants");
    assert_eq!(tenants.count_documents(doc! {"_id": "acme"}).await.unwrap(), 1);
}
