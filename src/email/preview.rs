//! The rendered message as shown in `status.preview`, bounded so a large body never bloats
//! the object (etcd objects are limited to about 1.5 MB, and every watcher receives them).

use crate::api::Preview;
use crate::conditions::truncate;
use crate::message::OutgoingMessage;

/// Bodies in status are cut to this many bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

pub fn of(message: &OutgoingMessage) -> Preview {
    Preview {
        subject: Some(message.subject.clone()),
        text: message.text.as_deref().map(|t| truncate(t, MAX_BODY_BYTES)),
        html: message.html.as_deref().map(|h| truncate(h, MAX_BODY_BYTES)),
    }
}
