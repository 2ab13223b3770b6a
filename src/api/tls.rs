//! TLS for the TCP listener: a per-state-dir CA (`ca.crt`, `ca.key` 0600) made at first start,
//! and a server certificate for the listen address issued from it at every start. kubectl only
//! sends bearer tokens over TLS, so the TCP listener is HTTPS; `tend kubeconfig` embeds `ca.crt`.

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors making or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "tend local CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

fn write_file(path: &Path, body: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let ioerr = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(ioerr)?;
    f.write_all(body.as_bytes()).map_err(ioerr)?;
    std::fs::rename(&tmp, path).map_err(ioerr)
}

/// The names a server certificate for `listen` carries: `localhost`, the loopback addresses,
/// the listen address (unless unspecified), the host name when listening on every address
/// (`0.0.0.0`/`::`), and `extra` (`tend serve --tls-san`, names or addresses), without repeats.
pub fn server_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if listen.ip().is_unspecified() {
        if let Some(h) = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
        {
            names.push(h);
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// The CA (made on first use) and a fresh server certificate for `listen` naming
/// [`server_names`]`(listen, extra_sans)`, as a rustls config.
pub fn server_config(
    ca_cert: &Path,
    key_path: &Path,
    listen: SocketAddr,
    extra_sans: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca_key = match std::fs::read_to_string(key_path) {
        Ok(pem) if ca_cert.exists() => rcgen::KeyPair::from_pem(&pem)?,
        _ => {
            let key = rcgen::KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_file(key_path, &key.serialize_pem(), 0o600)?;
            write_file(ca_cert, &cert.pem(), 0o644)?;
            key
        }
    };
    // Same name and key as the stored CA, so what it signs chains to ca.crt.
    let issuer = ca_params()?.self_signed(&ca_key)?;
    let names = server_names(listen, extra_sans);
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tend");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = params.signed_by(&leaf_key, &issuer, &ca_key)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client config trusting only `ca_pem` (the state dir's `ca.crt`).
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_blocks(ca_pem) {
        roots.add(der.into())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The DER contents of each `CERTIFICATE` block in a PEM text.
fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b64) = cur.take() {
                out.push(base64_decode(&b64));
            }
        } else if let Some(c) = cur.as_mut() {
            c.push_str(line);
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (kubeconfig's `certificate-authority-data`).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let Some(v) = B64.iter().position(|x| *x == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0, 255, 7, 9, 200]] {
            assert_eq!(base64_decode(&base64_encode(s)), s);
        }
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }

    #[test]
    fn ca_is_made_once_and_server_config_builds() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        server_config(&crt, &key, "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
        let ca = std::fs::read_to_string(&crt).unwrap();
        server_config(&crt, &key, "127.0.0.1:0".parse().unwrap(), &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&crt).unwrap(), ca);
        client_config(&ca).unwrap();
    }

    #[test]
    fn names_carry_the_listen_address_or_the_host_name_and_every_extra_once() {
        let extra = [
            "api.example".to_string(),
            "192.0.2.1".into(),
            "localhost".into(),
        ];
        let n = server_names("192.0.2.7:6443".parse().unwrap(), &extra);
        assert_eq!(
            n,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "192.0.2.7",
                "api.example",
                "192.0.2.1"
            ]
        );
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        let n = server_names("0.0.0.0:6443".parse().unwrap(), &[]);
        assert!(
            n.contains(&host) && !n.contains(&"0.0.0.0".to_string()),
            "{n:?}"
        );
    }
}
