//! Where settings come from: the environment, then the `--config` TOML file; `NAME_FILE`
//! secrets, `NAME_AWS` references, and unknown variables refused with a suggestion.

use super::*;

/// Where settings come from: the environment, then the file.
pub(super) struct Source<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) file: Option<(String, toml::Table)>,
}

impl Source<'_> {
    /// The value of `var` and the name to blame in errors.
    pub(super) fn get(&self, var: &str) -> Option<(String, String)> {
        if let Some(v) = (self.env)(var) {
            return Some((v, var.to_owned()));
        }
        let (path, table) = self.file.as_ref()?;
        let key = file_key(var);
        let v = match table.get(&key)? {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        Some((v, format!("{key} in {path}")))
    }

    pub(super) fn parse<T>(
        &self,
        var: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SettingsError> {
        let Some((v, setting)) = self.get(var) else {
            return Ok(None);
        };
        let v = v.trim();
        if v.is_empty() {
            return Err(SettingsError {
                setting,
                problem: "set but empty; give it a value or unset it".into(),
            });
        }
        parse(v)
            .map(Some)
            .map_err(|problem| SettingsError { setting, problem })
    }
}

/// `NAME_FILE` gives a secret setting `NAME` as the path of a file holding it.
pub(super) const FILE_SUFFIX: &str = "_FILE";

/// `NAME_AWS` gives a secret setting `NAME` as a reference to AWS Secrets Manager
/// (`secretsmanager:ID[#json-key]`) or Parameter Store (`ssm:NAME`), read through the AWS
/// Parameters and Secrets Lambda extension by `capsign-lambda`.
pub const AWS_SUFFIX: &str = "_AWS";

/// The secret settings given as AWS references (`NAME_AWS`): each setting's name, the
/// variable and the reference, for `capsign-lambda` to resolve before [`Settings::load`].
///
/// # Errors
///
/// `NAME_AWS` set together with `NAME` or `NAME_FILE`.
pub fn aws_secret_references(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String, String)>, SettingsError> {
    let mut refs = Vec::new();
    for d in TABLE.iter().filter(|d| d.secret) {
        let var = format!("{}{AWS_SUFFIX}", d.name);
        let Some(reference) = env(&var) else { continue };
        for other in [d.name.to_owned(), format!("{}{FILE_SUFFIX}", d.name)] {
            if env(&other).is_some() {
                return Err(SettingsError::new(
                    &var,
                    format!("set together with {other}; set one of them"),
                ));
            }
        }
        refs.push((d.name, var, reference));
    }
    Ok(refs)
}

/// The largest secret file read.
pub(super) const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The secrets given as files (`NAME_FILE`, as container platforms mount secrets: Docker and
/// Kubernetes secrets, systemd credentials), read once: each secret setting's name and value.
///
/// # Errors
///
/// `NAME` and `NAME_FILE` both set, or a file that cannot be read, is empty, or is larger
/// than 64 KiB.
pub(super) fn secret_files(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, SettingsError> {
    let mut read = Vec::new();
    for d in TABLE.iter().filter(|d| d.secret) {
        let var = format!("{}{FILE_SUFFIX}", d.name);
        let Some(path) = env(&var) else { continue };
        let err = |problem: String| SettingsError::new(&var, problem);
        if env(d.name).is_some() {
            return Err(err(format!(
                "set together with {}; set one of them",
                d.name
            )));
        }
        let file =
            std::fs::File::open(&path).map_err(|e| err(format!("cannot read {path}: {e}")))?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_SECRET_FILE + 1),
            &mut text,
        )
        .map_err(|e| err(format!("cannot read {path}: {e}")))?;
        if text.len() as u64 > MAX_SECRET_FILE {
            return Err(err(format!("{path} is larger than 64 KiB")));
        }
        // A file written with `echo` ends with a line break, which is not part of the value.
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(err(format!("{path} is empty")));
        }
        read.push((d.name, value.to_owned()));
    }
    Ok(read)
}

/// Reads a `--config` file, refusing keys that name no setting.
pub(super) fn read_file(path: &Path) -> Result<(String, toml::Table), SettingsError> {
    let shown = path.display().to_string();
    let err = |problem| SettingsError::new("--config", problem);
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read {shown}: {e}")))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| err(format!("{shown} is not valid TOML: {e}")))?;
    if let Some(key) = table
        .keys()
        .find(|key| !TABLE.iter().any(|d| d.file_key() == **key))
    {
        return Err(err(format!("unknown setting {key:?} in {shown}")));
    }
    Ok((shown, table))
}

/// Refuses a `CAPSIGN_*` name among `names` (an environment's variable names) that is no
/// setting: a typo (`CAPSIGN_COOKIE_KYE`, `CAPSIGN_DNY`) would otherwise leave the setting it
/// meant at its default without a word, where an unknown key of the `--config` file is refused.
///
/// # Errors
///
/// The first such name, with the setting it is closest to when one differs by a letter or two.
pub fn refuse_unknown_variables(
    names: impl IntoIterator<Item = String>,
) -> Result<(), SettingsError> {
    for name in names {
        let named = |n: &str| TABLE.iter().any(|d| d.name == n);
        let secret_file = [FILE_SUFFIX, AWS_SUFFIX].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|n| TABLE.iter().any(|d| d.name == n && d.secret))
        });
        if !name.starts_with("CAPSIGN_") || named(&name) || secret_file {
            continue;
        }
        let near = TABLE
            .iter()
            .map(|d| (edit_distance(&name, d.name), d.name))
            .min()
            .filter(|(distance, _)| *distance <= 2)
            .map(|(_, n)| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        return Err(SettingsError::new(
            &name,
            format!("set, but capsign has no such setting{near}; `capsign --help` lists them"),
        ));
    }
    Ok(())
}

/// Whether `url`'s host is a loopback address or `localhost`.
pub(super) fn is_loopback_host(url: &Uri) -> bool {
    let host = url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Levenshtein distance between two short ASCII names (for the suggestion above only).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or_default();
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or_default();
            let left = row.get(j).copied().unwrap_or_default();
            let value = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(left + 1);
            diagonal = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or_default()
}
