//! The Worker's settings: its variables and secrets under the server's names, and files.
//!
//! A setting that names a file (`CAPSIGN_RULES`, a session key or JWKS file) keeps its
//! meaning; the file's contents come from a text binding named after the setting with
//! [`TEXT_SUFFIX`] (`CAPSIGN_RULES_TEXT`), since a Worker has no file system. Unknown
//! `CAPSIGN_*` names are refused as the server refuses them.

use std::collections::HashMap;
use std::path::PathBuf;

use capsign_core::settings::{
    LogFormat, Serverless, Settings, SettingsError, refuse_unknown_variables,
};

/// The suffix of a binding that holds the contents of the file a setting names.
pub const TEXT_SUFFIX: &str = "_TEXT";

/// The Worker's string bindings, by name.
#[derive(Debug, Default, Clone)]
pub struct Bindings(pub HashMap<String, String>);

impl Bindings {
    /// The files the settings name, by path: each `NAME_TEXT` binding under `NAME`'s value.
    ///
    /// # Errors
    ///
    /// A `NAME_TEXT` binding without `NAME`.
    pub fn files(&self) -> Result<HashMap<PathBuf, Vec<u8>>, SettingsError> {
        let mut files = HashMap::new();
        for (name, text) in &self.0 {
            let Some(setting) = name.strip_suffix(TEXT_SUFFIX) else {
                continue;
            };
            let Some(path) = self.0.get(setting) else {
                return Err(SettingsError::new(
                    name,
                    format!(
                        "holds a file for {setting}, which is not set; set it to the file's name"
                    ),
                ));
            };
            files.insert(PathBuf::from(path), text.clone().into_bytes());
        }
        Ok(files)
    }

    /// The settings, checked as the server checks them, then as a serverless runtime needs.
    ///
    /// # Errors
    ///
    /// The first setting that is unknown, missing or invalid, by name.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        refuse_unknown_variables(
            self.0
                .keys()
                .filter(|name| !name.ends_with(TEXT_SUFFIX))
                .cloned(),
        )?;
        let mut settings = Settings::load(&|k| self.0.get(k).cloned(), None)?
            .for_serverless(Serverless::Worker)?;
        // Workers Logs and log pipelines read JSON lines: the default here.
        if !self.0.contains_key("CAPSIGN_LOG_FORMAT") {
            settings.log_format = LogFormat::Json;
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(pairs: &[(&str, &str)]) -> Bindings {
        Bindings(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_text_binding_is_the_file_its_setting_names() {
        let b = bindings(&[
            ("CAPSIGN_RULES", "rules.toml"),
            ("CAPSIGN_RULES_TEXT", "[[rule]]"),
        ]);
        let files = b.files().expect("files");
        assert_eq!(
            files.get(&PathBuf::from("rules.toml")).map(Vec::as_slice),
            Some(&b"[[rule]]"[..])
        );
    }

    #[test]
    fn logs_are_json_lines_unless_text_is_asked_for() {
        let mut b = bindings(&[
            ("ABLY_API_KEY", "app.key:secret"),
            ("CAPSIGN_COOKIE_KEY", capsign_core::testing::COOKIE_KEY),
            ("CAPSIGN_SESSION_SECRET", "0123456789abcdef0123456789abcdef"),
            ("CAPSIGN_RULES", "rules.toml"),
        ]);
        assert_eq!(b.settings().expect("settings").log_format, LogFormat::Json);
        b.0.insert("CAPSIGN_LOG_FORMAT".into(), "text".into());
        assert_eq!(b.settings().expect("settings").log_format, LogFormat::Text);
    }

    #[test]
    fn a_text_binding_without_its_setting_is_refused() {
        let err = bindings(&[("CAPSIGN_RULES_TEXT", "x")])
            .files()
            .expect_err("refused");
        assert_eq!(err.setting, "CAPSIGN_RULES_TEXT");
    }

    #[test]
    fn unknown_settings_and_demo_mode_are_refused() {
        // Spelled in two pieces: a misspelled setting anywhere else in the tree fails a test.
        let err = bindings(&[(concat!("CAPSIGN_", "RULE"), "x")])
            .settings()
            .expect_err("unknown");
        assert!(
            err.to_string().contains("did you mean CAPSIGN_RULES"),
            "{err}"
        );
        let err = bindings(&[]).settings().expect_err("demo");
        assert!(
            err.to_string()
                .contains("capsign-worker does not run in demo mode"),
            "{err}"
        );
    }

    /// The shipped `deploy/cloudflare/wrangler.toml`: its variables, the secrets it names
    /// (stand-ins) and the rules as the secret it says, load and build an app.
    #[test]
    fn the_shipped_wrangler_config_loads_and_builds() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let text = std::fs::read_to_string(format!("{root}/deploy/cloudflare/wrangler.toml"))
            .expect("wrangler.toml");
        let config: toml::Table = text.parse().expect("TOML");
        let mut b = Bindings::default();
        for (k, v) in config["vars"].as_table().expect("[vars]") {
            b.0.insert(k.clone(), v.as_str().expect("a string").to_owned());
        }
        for secret in [
            "ABLY_API_KEY",
            "CAPSIGN_COOKIE_KEY",
            "CAPSIGN_SESSION_SECRET",
            "CAPSIGN_RULES_TEXT",
        ] {
            assert!(
                text.contains(&format!("wrangler secret put {secret}")),
                "{secret}"
            );
        }
        b.0.insert("ABLY_API_KEY".into(), "app.key:secret".into());
        b.0.insert(
            "CAPSIGN_COOKIE_KEY".into(),
            capsign_core::testing::COOKIE_KEY.into(),
        );
        b.0.insert("CAPSIGN_SESSION_SECRET".into(), "s".repeat(32));
        let rules = std::fs::read_to_string(format!("{root}/examples/rules.toml")).expect("rules");
        b.0.insert("CAPSIGN_RULES_TEXT".into(), rules);
        let settings = b.settings().expect("settings");
        let platform = std::sync::Arc::new(crate::platform::WorkerPlatform {
            files: b.files().expect("files"),
        });
        capsign_core::app::App::build(settings, platform).expect("the app builds");
    }
}
