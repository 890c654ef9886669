//! The InfluxDB sink's settings, from the `influx_*` options: the URL and CA file checked, the
//! v1 or v2 API chosen, the credentials read from their files or environment variables (never
//! shown: `--check-config` names where they come from).

use std::path::PathBuf;

use tapflow_runtime::toml_string as toml_str;

use super::{Options, DEFAULT_INFLUX_BATCH_LINES};
use crate::influx::{InfluxApi, InfluxConfig};

/// The v1 password, when no `influx_password_file` is given.
pub const PASSWORD_ENV: &str = "TAPFLOW_INFLUX_PASSWORD";
/// The v2 token, when no `influx_token_file` is given.
pub const TOKEN_ENV: &str = "TAPFLOW_INFLUX_TOKEN";

/// The InfluxDB sink's settings, if a URL is given; problems go to `errors`.
pub(super) fn influx_config(o: &Options, errors: &mut Vec<String>) -> Option<InfluxConfig> {
    let url = o.influx_url.clone()?;
    if let Err(e) = crate::influx::check_url(&url) {
        errors.push(e.to_string());
    }
    if let Some(p) = &o.influx_ca_file {
        if !url.starts_with("https://") {
            errors.push("influx_ca_file is for an https:// influx_url".to_owned());
        } else if let Err(e) = crate::influx::load_ca_file(p) {
            errors.push(e.to_string());
        }
    }
    let api = api(o, errors)?;
    let spool = o
        .influx_spool_dir
        .clone()
        .or_else(crate::influx::default_spool_dir)
        .unwrap_or_else(|| {
            errors.push(
                "no state directory for the InfluxDB spool (no STATE_DIRECTORY, XDG_STATE_HOME \
                 nor HOME): give --influx-spool-dir"
                    .to_owned(),
            );
            PathBuf::new()
        });
    let mut cfg = InfluxConfig::new(url, api, spool);
    cfg.ca_file = o.influx_ca_file.clone();
    let batch_lines = o.influx_batch_lines.unwrap_or(DEFAULT_INFLUX_BATCH_LINES);
    if batch_lines == 0 {
        errors.push("influx_batch_lines must be at least 1".to_owned());
    }
    cfg.batch_lines = batch_lines.max(1);
    Some(cfg)
}

/// v1 (a database) or v2 (an organisation and a bucket, with a token).
fn api(o: &Options, errors: &mut Vec<String>) -> Option<InfluxApi> {
    match (&o.influx_db, &o.influx_org, &o.influx_bucket) {
        (Some(db), None, None) => Some(InfluxApi::V1 {
            db: db.clone(),
            rp: o.influx_rp.clone(),
            user: o.influx_user.clone(),
            password: secret(
                o.influx_password_file.clone(),
                PASSWORD_ENV,
                "password",
                errors,
            ),
        }),
        (None, Some(org), Some(bucket)) => {
            let token = secret(o.influx_token_file.clone(), TOKEN_ENV, "token", errors);
            if token.is_none() {
                errors.push("the InfluxDB v2 API needs a token: --influx-token-file or TAPFLOW_INFLUX_TOKEN".to_owned());
            }
            Some(InfluxApi::V2 {
                org: org.clone(),
                bucket: bucket.clone(),
                token: token.unwrap_or_default(),
            })
        }
        _ => {
            errors.push("with --influx-url give either --influx-db (v1) or --influx-org and --influx-bucket (v2)".to_owned());
            None
        }
    }
}

/// A credential: the trimmed contents of the file at `path`, else the non-empty `env`.
fn secret(
    path: Option<PathBuf>,
    env: &str,
    what: &str,
    errors: &mut Vec<String>,
) -> Option<String> {
    match path {
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) => {
                errors.push(format!(
                    "cannot read the InfluxDB {what} file {}: {e}",
                    p.display()
                ));
                None
            }
        },
        None => std::env::var(env).ok().filter(|s| !s.is_empty()),
    }
}

/// The line of [`super::Config::resolved`] that says where a credential comes from:
/// `key = "PATH"` for a file, a comment naming `env` when it is set there, nothing otherwise.
pub(super) fn secret_source(path: Option<PathBuf>, key: &str, env: &str) -> String {
    match path {
        Some(p) => format!("{key} = {}\n", toml_str(&p.to_string_lossy())),
        None if std::env::var_os(env).is_some_and(|v| !v.is_empty()) => {
            format!("# {key}: not set; the credential comes from {env}\n")
        }
        None => String::new(),
    }
}
