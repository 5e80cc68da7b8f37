//! Container metadata for `inspect`, in Apptainer's shape (`pkg/inspect/metadata.go`):
//! `{"data":{"attributes":{...}},"type":"container"}`.
//!
//! The attributes come from the SIF's `inspect-metadata.json` object when the image has one
//! (what `apptainer build` writes), otherwise from the files under `/.singularity.d` (and
//! `/scif/apps/*/scif`) read straight from the image, without starting a container.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::files::ImageFiles;

/// Metadata of one SCIF app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAttributes {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runscript: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub test: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helpfile: String,
}

/// Container attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, AppAttributes>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runscript: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub test: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helpfile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deffile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub startscript: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub attributes: Attributes,
}

/// The document `inspect --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub data: Data,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            data: Data::default(),
            kind: "container".into(),
        }
    }
}

/// Which sections were asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub labels: bool,
    pub deffile: bool,
    pub runscript: bool,
    pub startscript: bool,
    pub test: bool,
    pub environment: bool,
    pub helpfile: bool,
    pub list_apps: bool,
    pub all: bool,
    pub app: Option<String>,
}

impl Selection {
    /// Labels are the default when nothing else is asked for.
    pub fn wants_labels(&self) -> bool {
        self.labels
            || self.all
            || !(self.helpfile
                || self.deffile
                || self.runscript
                || self.startscript
                || self.test
                || self.environment
                || self.list_apps)
    }
}

fn text(files: &dyn ImageFiles, path: &str) -> std::io::Result<Option<String>> {
    Ok(files.read(path)?.map(|b| {
        String::from_utf8_lossy(&b)
            .trim_end_matches('\n')
            .to_string()
    }))
}

fn labels(files: &dyn ImageFiles, path: &str) -> std::io::Result<BTreeMap<String, String>> {
    Ok(match files.read(path)? {
        Some(b) => serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&b)
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        None => BTreeMap::new(),
    })
}

fn environment(
    files: &dyn ImageFiles,
    dir: &str,
    docker_too: bool,
) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let env_dir = format!("{dir}/env");
    for name in files.list(&env_dir)? {
        let wanted = (docker_too && name.starts_with("10-docker") && name.ends_with(".sh"))
            || (name.starts_with('9') && name.ends_with("-environment.sh"));
        if wanted {
            let p = format!("{env_dir}/{name}");
            if let Some(t) = text(files, &p)? {
                out.insert(p, t);
            }
        }
    }
    Ok(out)
}

/// Collects the requested attributes from the image's files.
pub fn from_files(files: &dyn ImageFiles, sel: &Selection) -> std::io::Result<Metadata> {
    let mut m = Metadata::default();
    let a = &mut m.data.attributes;
    let base = "/.singularity.d";
    let app_names: Vec<String> = files
        .list("/scif/apps")?
        .into_iter()
        .filter(|n| {
            !files
                .list(&format!("/scif/apps/{n}/scif"))
                .unwrap_or_default()
                .is_empty()
        })
        .collect();
    // With --app (and not --all), single-file sections come from the app's directory.
    let app_dir = sel
        .app
        .as_ref()
        .filter(|_| !sel.all)
        .map(|a| format!("/scif/apps/{a}/scif"));
    let dir = app_dir.as_deref().unwrap_or(base);
    let into_app = |a: &mut Attributes, f: &dyn Fn(&mut AppAttributes)| {
        if let Some(name) = sel.app.as_ref().filter(|_| !sel.all) {
            f(a.apps.entry(name.clone()).or_default());
        }
    };
    if sel.wants_labels() {
        let l = labels(files, &format!("{dir}/labels.json"))?;
        if app_dir.is_some() {
            into_app(a, &|app| app.labels = l.clone());
        } else {
            a.labels = l;
        }
    }
    if sel.deffile || sel.all {
        // Builds write the definition as `Singularity` (older) or `Apptainer`.
        for name in ["Singularity", "Apptainer"] {
            if let Some(t) = text(files, &format!("{base}/{name}"))? {
                a.deffile = t;
                break;
            }
        }
    }
    let single = |a: &mut Attributes,
                  file: &str,
                  set: fn(&mut Attributes, String),
                  setapp: fn(&mut AppAttributes, String)|
     -> std::io::Result<()> {
        if let Some(t) = text(files, &format!("{dir}/{file}"))? {
            if app_dir.is_some() {
                into_app(a, &|app| setapp(app, t.clone()));
            } else {
                set(a, t);
            }
        }
        Ok(())
    };
    if sel.helpfile || sel.all {
        single(
            a,
            "runscript.help",
            |a, t| a.helpfile = t,
            |p, t| p.helpfile = t,
        )?;
    }
    if sel.runscript || sel.all {
        single(
            a,
            "runscript",
            |a, t| a.runscript = t,
            |p, t| p.runscript = t,
        )?;
    }
    if (sel.startscript || sel.all) && app_dir.is_none() {
        single(a, "startscript", |a, t| a.startscript = t, |_, _| {})?;
    }
    if sel.test || sel.all {
        single(a, "test", |a, t| a.test = t, |p, t| p.test = t)?;
    }
    if sel.environment || sel.all {
        let e = environment(files, dir, app_dir.is_none())?;
        if app_dir.is_some() {
            into_app(a, &|app| app.environment = e.clone());
        } else {
            a.environment = e;
        }
    }
    if sel.list_apps || sel.all {
        for n in &app_names {
            a.apps.entry(n.clone()).or_default();
        }
    }
    if sel.all {
        for n in &app_names {
            let d = format!("/scif/apps/{n}/scif");
            let app = AppAttributes {
                environment: environment(files, &d, false)?,
                labels: labels(files, &format!("{d}/labels.json"))?,
                runscript: text(files, &format!("{d}/runscript"))?.unwrap_or_default(),
                test: text(files, &format!("{d}/test"))?.unwrap_or_default(),
                helpfile: text(files, &format!("{d}/runscript.help"))?.unwrap_or_default(),
            };
            a.apps.insert(n.clone(), app);
        }
    }
    Ok(m)
}

/// Keeps from the SIF's full metadata what was asked for (Apptainer copies only the
/// requested sections).
pub fn select(full: &Metadata, sel: &Selection) -> Metadata {
    if sel.all {
        return full.clone();
    }
    let f = &full.data.attributes;
    let mut m = Metadata::default();
    let a = &mut m.data.attributes;
    match &sel.app {
        Some(name) => {
            if let Some(src) = f.apps.get(name) {
                let mut app = AppAttributes::default();
                if sel.wants_labels() {
                    app.labels = src.labels.clone();
                }
                if sel.runscript {
                    app.runscript = src.runscript.clone();
                }
                if sel.test {
                    app.test = src.test.clone();
                }
                if sel.helpfile {
                    app.helpfile = src.helpfile.clone();
                }
                if sel.environment {
                    app.environment = src.environment.clone();
                }
                a.apps.insert(name.clone(), app);
            }
        }
        None => {
            if sel.wants_labels() {
                a.labels = f.labels.clone();
            }
            if sel.runscript {
                a.runscript = f.runscript.clone();
            }
            if sel.startscript {
                a.startscript = f.startscript.clone();
            }
            if sel.test {
                a.test = f.test.clone();
            }
            if sel.helpfile {
                a.helpfile = f.helpfile.clone();
            }
            if sel.environment {
                a.environment = f.environment.clone();
            }
        }
    }
    if sel.deffile {
        a.deffile = f.deffile.clone();
    }
    if sel.list_apps {
        for n in f.apps.keys() {
            a.apps.entry(n.clone()).or_default();
        }
    }
    m
}

/// JSON the way Go's `json.MarshalIndent(v, "", "\t")` writes it: tab indentation, sorted
/// map keys, and `<`, `>`, `&`, U+2028, U+2029 escaped.
pub fn to_go_json<T: Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return "{}".into();
    }
    String::from_utf8_lossy(&buf)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The text output of `inspect` without `--json`, in Apptainer's order.
pub fn to_text(m: &Metadata, sel: &Selection) -> String {
    let a = &m.data.attributes;
    let app = sel.app.as_ref().and_then(|n| a.apps.get(n));
    let mut out = String::new();
    if sel.list_apps {
        for n in a.apps.keys() {
            out.push_str(&format!("{n}\n"));
        }
    }
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    if !a.deffile.is_empty() {
        line(&a.deffile);
    }
    if !a.runscript.is_empty() {
        line(&a.runscript);
    } else if let Some(p) = app.filter(|p| !p.runscript.is_empty()) {
        line(&p.runscript);
    }
    if !a.startscript.is_empty() {
        line(&a.startscript);
    }
    if !a.test.is_empty() {
        line(&a.test);
    } else if let Some(p) = app.filter(|p| !p.test.is_empty()) {
        line(&p.test);
    }
    if !a.helpfile.is_empty() {
        line(&a.helpfile);
    } else if let Some(p) = app.filter(|p| !p.helpfile.is_empty()) {
        line(&p.helpfile);
    }
    let env = if !a.environment.is_empty() {
        Some(&a.environment)
    } else {
        app.map(|p| &p.environment).filter(|e| !e.is_empty())
    };
    if let Some(env) = env {
        for (k, v) in env {
            line(&format!("=== {k} ===\n{v}\n"));
        }
    }
    let labels = if !a.labels.is_empty() {
        Some(&a.labels)
    } else {
        app.map(|p| &p.labels).filter(|l| !l.is_empty())
    };
    if let Some(labels) = labels {
        for (k, v) in labels {
            line(&format!("{k}: {v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(BTreeMap<String, String>);

    impl ImageFiles for Fake {
        fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.0.get(path).map(|s| s.as_bytes().to_vec()))
        }
        fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
            let prefix = format!("{dir}/");
            let mut names: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|r| r.split('/').next().unwrap_or("").to_string())
                .collect();
            names.dedup();
            Ok(names)
        }
    }

    fn image() -> Fake {
        Fake(
            [
                (
                    "/.singularity.d/labels.json",
                    "{\"b\": \"2\", \"a\": \"1 & <x>\"}",
                ),
                ("/.singularity.d/runscript", "#!/bin/sh\necho run\n"),
                ("/.singularity.d/Singularity", "Bootstrap: scratch\n"),
                ("/.singularity.d/env/90-environment.sh", "export A=1\n"),
                (
                    "/.singularity.d/env/10-docker2singularity.sh",
                    "export P=1\n",
                ),
                ("/.singularity.d/env/01-base.sh", "# base\n"),
                ("/scif/apps/foo/scif/runscript", "echo foo\n"),
                ("/scif/apps/foo/scif/labels.json", "{\"app\": \"foo\"}"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
    }

    #[test]
    fn test_labels_default_and_text_output() {
        let sel = Selection::default();
        let m = from_files(&image(), &sel).expect("ok");
        assert_eq!(to_text(&m, &sel), "a: 1 & <x>\nb: 2\n");
        let json = to_go_json(&m);
        assert!(json.starts_with("{\n\t\"data\": {\n\t\t\"attributes\": {\n\t\t\t\"labels\": {"));
        assert!(json.contains("\\u0026 \\u003cx\\u003e"), "{json}");
        assert!(json.ends_with("\t\"type\": \"container\"\n}"));
    }

    #[test]
    fn test_sections_and_apps() {
        let sel = Selection {
            runscript: true,
            deffile: true,
            environment: true,
            list_apps: true,
            ..Default::default()
        };
        let m = from_files(&image(), &sel).expect("ok");
        let a = &m.data.attributes;
        assert_eq!(a.runscript, "#!/bin/sh\necho run");
        assert_eq!(a.deffile, "Bootstrap: scratch");
        assert_eq!(a.environment.len(), 2, "10-docker and 9*-environment only");
        assert!(a.apps.contains_key("foo"));
        assert!(a.labels.is_empty(), "labels only by default");
        let app = Selection {
            runscript: true,
            app: Some("foo".into()),
            ..Default::default()
        };
        let m = from_files(&image(), &app).expect("ok");
        assert_eq!(m.data.attributes.apps["foo"].runscript, "echo foo");
        assert_eq!(to_text(&m, &app), "echo foo\n");
    }

    #[test]
    fn test_select_from_sif_metadata() {
        let full: Metadata = serde_json::from_str(
            r#"{"data":{"attributes":{"labels":{"k":"v"},"runscript":"r","deffile":"d"}},"type":"container"}"#,
        )
        .expect("parse");
        let m = select(&full, &Selection::default());
        assert_eq!(m.data.attributes.labels["k"], "v");
        assert!(m.data.attributes.runscript.is_empty());
        let all = select(
            &full,
            &Selection {
                all: true,
                ..Default::default()
            },
        );
        assert_eq!(all, full);
    }
}
