//! The local OAuth issuer: what the Cognito user pool is on AWS, served by the local runner. It signs RS256 access
//! tokens with a key kept under the git-ignored `.stack/auth/` (generated once, with aws-lc-rs), publishes it at
//! `/.well-known/jwks.json`, and grants tokens at `/oauth2/token` (client-credentials grant) to the clients of
//! local tenants, whose ids and secrets live in `.stack/auth/clients/`.
//!
//! Tokens look like Cognito's client-credentials access tokens (`client_id`, `scope`, `token_use`), plus an `aud`
//! naming the API, so that the local authorizer's audience list is one fixed name.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use imgpipe_core::auth::{Scope, TenantId};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::authorizer::Authorizer;

/// Lifetime of the tokens granted here: Cognito's default for access tokens.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// A local tenant's OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub client_id: String,
    pub client_secret: String,
    /// The scopes it may be granted.
    pub scopes: Vec<String>,
}

/// The issuer: its identifier (`iss`), the audience its tokens name, and its signing key.
pub struct LocalIssuer {
    dir: PathBuf,
    issuer: String,
    audience: String,
    key: EncodingKey,
    jwk: Jwk,
}

fn io_error(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Writes `bytes` to `path` (mode 0600) unless it exists: written beside it, then linked into place, so that two
/// processes starting at once keep one file and neither reads a half-written one.
fn create_once(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl LocalIssuer {
    /// The issuer whose key and clients live in `dir` (created, mode 0700; the key is generated on first use).
    pub fn open(dir: &Path, issuer: &str, audience: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir.join("clients"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let key_path = dir.join("signing-key.pem");
        if !key_path.exists() {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| io_error("generating the RSA signing key", e))?;
            let der = pair.as_der().map_err(|e| io_error("encoding the RSA signing key", e))?;
            let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
            create_once(&key_path, pem.as_bytes())?;
        }
        let pem = std::fs::read(&key_path)?;
        let key = EncodingKey::from_rsa_pem(&pem).map_err(|e| io_error(&key_path.display().to_string(), e))?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).map_err(|e| io_error("public key", e))?;
        // The key id is the key's RFC 7638 thumbprint: a new key gets a new id.
        jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| io_error("thumbprint", e))?);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self { dir: dir.to_path_buf(), issuer: issuer.to_string(), audience: audience.to_string(), key, jwk })
    }

    /// The `iss` of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of its tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The key id of its signing key.
    pub fn kid(&self) -> &str {
        self.jwk.common.key_id.as_deref().unwrap_or_default()
    }

    /// Its public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.jwk.clone()] }
    }

    /// The authorizer that accepts its tokens (and only those of the local API's audience).
    pub fn authorizer(&self) -> Authorizer {
        Authorizer::new(&self.issuer, std::slice::from_ref(&self.audience), &self.jwks())
    }

    /// Signs any claims with its key (RS256, its key id): tests build expired or foreign tokens with it.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid().to_string());
        jsonwebtoken::encode(&header, claims, &self.key).expect("an RSA key signs any JSON claims")
    }

    /// The claims of an access token for `client_id` with `scopes`, valid from now for [`TOKEN_LIFETIME_SECS`].
    pub fn claims(&self, client_id: &str, scopes: &[Scope]) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let scope: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        json!({
            "iss": self.issuer, "aud": self.audience, "sub": client_id, "client_id": client_id,
            "token_use": "access", "scope": scope.join(" "), "iat": now, "exp": now + TOKEN_LIFETIME_SECS,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// An access token for `client_id` with `scopes`.
    pub fn access_token(&self, client_id: &str, scopes: &[Scope]) -> String {
        self.sign(&self.claims(client_id, scopes))
    }

    fn client_path(&self, client_id: &str) -> Option<PathBuf> {
        // Only tenant-shaped ids name files: no path can be smuggled in.
        TenantId::parse(client_id).ok().map(|id| self.dir.join("clients").join(format!("{id}.json")))
    }

    /// The client of `tenant` (its client id is the tenant, the default tenant claim being `client_id`), created
    /// with a new random secret and `scopes` if it does not exist yet; an existing client is returned unchanged.
    pub fn register(&self, tenant: &TenantId, scopes: &[Scope]) -> io::Result<Client> {
        let path = self.client_path(tenant.as_str()).expect("a tenant id is a valid client id");
        if !path.exists() {
            let mut secret = [0u8; 32];
            aws_lc_rs::rand::fill(&mut secret).map_err(|e| io_error("random secret", e))?;
            let client = Client {
                client_id: tenant.to_string(),
                client_secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
                scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
            };
            create_once(&path, &serde_json::to_vec_pretty(&client)?)?;
        }
        self.client(tenant.as_str())?.ok_or_else(|| io_error(&path.display().to_string(), "vanished"))
    }

    /// A registered client.
    pub fn client(&self, client_id: &str) -> io::Result<Option<Client>> {
        let Some(path) = self.client_path(client_id) else { return Ok(None) };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| io_error(&path.display().to_string(), e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The discovery document (`/.well-known/openid-configuration`) of an issuer served at `base_url`.
    pub fn discovery(&self, base_url: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base_url}/.well-known/jwks.json"),
            "token_endpoint": format!("{base_url}/oauth2/token"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }
}
