//! The message templates: the built-in ones compiled into the binary, each
//! replaceable by a file of the same name in the platform's templates
//! folder (`service.templates.dir`). An override is parsed and rendered
//! once with sample values when the service starts, so a broken one stops
//! the start with the file's name instead of failing sends later.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

const BUILTIN: [(&str, &str); 17] = [
    (
        "confirmation.txt",
        include_str!("../../templates/confirmation.txt"),
    ),
    (
        "confirmation.html",
        include_str!("../../templates/confirmation.html"),
    ),
    (
        "reschedule.txt",
        include_str!("../../templates/reschedule.txt"),
    ),
    (
        "reschedule.html",
        include_str!("../../templates/reschedule.html"),
    ),
    (
        "cancellation.txt",
        include_str!("../../templates/cancellation.txt"),
    ),
    (
        "cancellation.html",
        include_str!("../../templates/cancellation.html"),
    ),
    ("refund.txt", include_str!("../../templates/refund.txt")),
    ("refund.html", include_str!("../../templates/refund.html")),
    (
        "payment_failed.txt",
        include_str!("../../templates/payment_failed.txt"),
    ),
    (
        "payment_failed.html",
        include_str!("../../templates/payment_failed.html"),
    ),
    ("reminder.txt", include_str!("../../templates/reminder.txt")),
    (
        "reminder.html",
        include_str!("../../templates/reminder.html"),
    ),
    (
        "confirmation.sms",
        include_str!("../../templates/confirmation.sms"),
    ),
    (
        "reschedule.sms",
        include_str!("../../templates/reschedule.sms"),
    ),
    (
        "cancellation.sms",
        include_str!("../../templates/cancellation.sms"),
    ),
    ("reminder.sms", include_str!("../../templates/reminder.sms")),
    ("layout.html", include_str!("../../templates/layout.html")),
];

/// The names a templates folder may hold (`confirmation.txt`, …).
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, each replaced by `<dir>/<name>` where that
    /// file exists. Any other file in `dir` is refused (a misspelt name
    /// would otherwise be ignored in silence).
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let mut env = Environment::new();
        for (name, source) in BUILTIN {
            env.add_template(name, source)
                .map_err(|e| format!("built-in template {name}: {e}"))?;
        }
        let Some(dir) = dir else {
            return Ok(Self { env });
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("templates folder {}: {e}", dir.display()))?;
        let mut overridden = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("templates folder {}: {e}", dir.display()))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes mounts a ConfigMap with `..data` links and dot
            // folders beside the files.
            if file.starts_with('.') {
                continue;
            }
            let Some(name) = names().find(|n| *n == file) else {
                return Err(format!(
                    "templates folder {}: {file} is not a template name (one of {})",
                    dir.display(),
                    names().collect::<Vec<_>>().join(", ")
                ));
            };
            let path = entry.path();
            let source = std::fs::read_to_string(&path)
                .map_err(|e| format!("template {}: {e}", path.display()))?;
            env.add_template_owned(name, source)
                .map_err(|e| format!("template {}: {e}", path.display()))?;
            overridden.push((name, path));
        }
        let templates = Self { env };
        for (name, path) in overridden {
            templates
                .render(name, &sample())
                .map_err(|e| format!("template {}: {e}", path.display()))?;
        }
        Ok(templates)
    }

    pub(super) fn render<S: Serialize>(&self, name: &str, context: &S) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| format!("{name} template: {e}"))
    }
}

/// What a template sees, with made-up values (for checking overrides).
fn sample() -> super::Context {
    super::Context {
        customer_name: Some("Ada Lovelace".into()),
        resource: "Room 1".into(),
        appointment_type: "Consultation".into(),
        when: "Monday 30 March 2026, 10:00–10:30".into(),
        when_short: "Mon 30 Mar, 10:00".into(),
        zone: "Europe/Berlin, CEST".into(),
        booking_id: "00000000-0000-0000-0000-000000000000".into(),
        amount: Some("25.00 EUR".into()),
    }
}
