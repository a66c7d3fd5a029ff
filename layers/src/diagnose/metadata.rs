//! Metadata checks: what the catalogue record lacks (title, description, licence,
//! contact, update frequency) and whether the data is older than its frequency says.

use super::*;

/// What the catalogue record lacks.
pub(super) fn checks(b: &mut Builder, meta: &LayerMeta) {
    let n = b.n;
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|x| x.trim().is_empty());
    if meta.title.trim().is_empty() || meta.title == meta.id {
        b.add(
            "metadata.title",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin título descriptivo (el título es el identificador)".into(),
            "no descriptive title (the title is the id)".into(),
            Some("datahub layer set --title \"…\"".into()),
        );
    }
    if meta.description.trim().is_empty() {
        b.add(
            "metadata.description",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin descripción: qué contiene, de dónde viene, cómo se levantó".into(),
            "no description: what it holds, where it comes from, how it was collected".into(),
            Some("datahub layer set --description \"…\"".into()),
        );
    }
    if meta.license.trim().is_empty() {
        b.add(
            "metadata.license",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin licencia de uso declarada".into(),
            "no licence declared".into(),
            Some("datahub layer set --license \"…\"".into()),
        );
    }
    if blank(&meta.contact_name) || blank(&meta.contact_email) {
        b.add(
            "metadata.contact",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin contacto responsable completo (nombre y correo)".into(),
            "no complete contact (name and email)".into(),
            Some("datahub layer set --contact-name \"…\" --contact-email …".into()),
        );
    }
    if blank(&meta.update_frequency) {
        b.add(
            "metadata.update_frequency",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            "sin frecuencia de actualización declarada".into(),
            "no update frequency declared".into(),
            Some("datahub layer set --update-frequency R/P1M".into()),
        );
    }
}
