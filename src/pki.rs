//! `cube tls init`: a small CA for one cluster and the certificates of its manager and workers.
//!
//! The CA's key stays in the directory it was made in (0600); run the command again there to add
//! certificates signed by the same CA. A certificate names the hosts it may be reached at (DNS
//! names or IP addresses): whoever calls the server checks that the address it used is one of
//! them, and that the certificate comes from this CA.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cube_actors::secret::write_private;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Makes `params` valid from the start of last year until the start of the year `years` from
/// now (rcgen's default would be valid until 4096).
fn valid_for(params: &mut CertificateParams, years: i32) {
    let year = chrono::Datelike::year(&chrono::Utc::now());
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The CA's parameters: the same each time, so that a CA key kept from an earlier run signs
/// certificates that chain to the CA certificate made then.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    // Ten years from the year it was made.
    valid_for(&mut params, 10);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Cube cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// One certificate to make: a name (its files are `NAME.pem` and `NAME.key`) and its hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The file name and the certificate's common name.
    pub name: String,
    /// DNS names and IP addresses it is valid for.
    pub hosts: Vec<String>,
}

impl std::str::FromStr for CertSpec {
    type Err = String;

    /// `NAME=HOST,HOST...`, or `NAME` alone for `localhost` and `127.0.0.1`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, hosts) = s.split_once('=').unwrap_or((s, "localhost,127.0.0.1"));
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(format!(
                "`{name}` is not a certificate name (letters, digits, -_.)"
            ));
        }
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        if hosts.is_empty() {
            return Err(format!("certificate {name} names no host"));
        }
        Ok(CertSpec {
            name: name.to_string(),
            hosts,
        })
    }
}

/// The CA in `dir` (made now if absent) and a certificate for each of `certs`; the files
/// written.
pub fn init(dir: &Path, certs: &[CertSpec]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let ca_key_path = dir.join("ca.key");
    let ca_cert_path = dir.join("ca.pem");
    let ca_key = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("cannot read {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a key", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate().context("making the CA key")?;
        let cert = ca_params()
            .self_signed(&key)
            .context("making the CA certificate")?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert_path, cert.pem())?;
        written.push(ca_cert_path.clone());
        written.push(ca_key_path.clone());
        key
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    for spec in certs {
        let mut params = CertificateParams::new(spec.hosts.clone())
            .with_context(|| format!("certificate {}: its hosts", spec.name))?;
        params
            .distinguished_name
            .push(DnType::CommonName, spec.name.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        // A server certificate is renewed (`cube tls init` again) within about two years.
        valid_for(&mut params, 2);
        let key = KeyPair::generate().context("making a key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing certificate {}", spec.name))?;
        let cert_path = dir.join(format!("{}.pem", spec.name));
        let key_path = dir.join(format!("{}.key", spec.name));
        std::fs::write(&cert_path, cert.pem())?;
        write_private(&key_path, &key.serialize_pem())?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_a_name_and_hosts() {
        let spec: CertSpec = "w1=10.0.0.7,w1.lan".parse().unwrap();
        assert_eq!(spec.name, "w1");
        assert_eq!(spec.hosts, ["10.0.0.7", "w1.lan"]);
        let local: CertSpec = "manager".parse().unwrap();
        assert_eq!(local.hosts, ["localhost", "127.0.0.1"]);
        assert!("a/b=x".parse::<CertSpec>().is_err());
        assert!("w=".parse::<CertSpec>().is_err());
    }

    #[test]
    fn a_second_run_signs_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path(), &["manager".parse().unwrap()]).unwrap();
        assert_eq!(first.len(), 4);
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let again = init(dir.path(), &["w1=127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        // The new certificate is accepted by a server config, and the CA by a client config.
        cube_actors::tls::server_config(&dir.path().join("w1.pem"), &dir.path().join("w1.key"))
            .unwrap();
        cube_actors::tls::ClientTls::from_ca_file(&dir.path().join("ca.pem")).unwrap();
    }
}
