//! Commands valid in any state that report about the server or the session:
//! CAPABILITY, NOOP/CHECK, LOGOUT, ID, and the logged-in-only ENABLE and
//! NAMESPACE, which likewise touch no mailbox.
//!
//! None of these may change replicated state.

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::{Atom, IString, QuotedChar, Tag, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::response::{Capability, Data, Status};
use imap_next::server::Server;

use crate::mime;
use crate::reply::{ok, text};
use crate::session::{Flow, Session};

impl Session {
    /// What this session offers now: login mechanisms only before login, and
    /// only where passwords may cross the wire.
    pub(crate) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.account.is_none() {
            if self.login_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        caps.extend([
            Capability::LiteralPlus,
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
            Capability::Id,
            Capability::Enable,
            Capability::Namespace,
            Capability::CondStore,
            Capability::QResync,
            Capability::Quota,
        ]);
        if let Ok(a) = Atom::try_from("SPECIAL-USE") {
            caps.push(Capability::from(a));
        }
        Vec1::try_from(caps).expect("non-empty")
    }

    pub(crate) fn capability(&mut self, server: &mut Server, tag: &Tag<'static>) {
        server.enqueue_data(Data::Capability(self.capabilities()));
        server.enqueue_status(ok(tag, None, "CAPABILITY completed"));
    }

    /// NOOP and CHECK: the moment to tell the client what changed.
    pub(crate) fn noop(&mut self, server: &mut Server, tag: &Tag<'static>) {
        self.sync(server, true);
        server.enqueue_status(ok(tag, None, "completed"));
    }

    pub(crate) fn logout(&mut self, server: &mut Server, tag: Tag<'static>) -> Flow {
        server.enqueue_status(Status::bye(None, text("maildr logging out")).expect("valid"));
        Flow::Logout(tag)
    }

    pub(crate) fn id(&mut self, server: &mut Server, tag: &Tag<'static>) {
        let params = vec![
            (IString::try_from("name").expect("valid"), mime::nstring(Some("maildr"))),
            (IString::try_from("version").expect("valid"), mime::nstring(Some(env!("CARGO_PKG_VERSION")))),
        ];
        server.enqueue_data(Data::Id { parameters: Some(params) });
        server.enqueue_status(ok(tag, None, "ID completed"));
    }

    /// ENABLE: CONDSTORE and QRESYNC are what there is to enable here; QRESYNC
    /// implies CONDSTORE (RFC 7162 §3.2.3). Anything else is left out of ENABLED.
    pub(crate) fn enable(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        capabilities: Vec1<CapabilityEnable<'static>>,
    ) {
        let mut enabled = Vec::new();
        for c in capabilities.into_inner() {
            match &c {
                CapabilityEnable::CondStore => self.condstore = true,
                CapabilityEnable::Other(_) if c.to_string().eq_ignore_ascii_case("QRESYNC") => {
                    self.condstore = true;
                    self.qresync = true;
                }
                _ => continue,
            }
            enabled.push(c);
        }
        server.enqueue_data(Data::Enabled { capabilities: enabled });
        server.enqueue_status(ok(tag, None, "ENABLE completed"));
    }

    pub(crate) fn namespace(&mut self, server: &mut Server, tag: &Tag<'static>) {
        let personal = vec![Namespace {
            prefix: IString::try_from("").expect("valid"),
            delimiter: Some(QuotedChar::try_from('/').expect("valid")),
            extensions: vec![],
        }];
        server.enqueue_data(Data::Namespace { personal, other: vec![], shared: vec![] });
        server.enqueue_status(ok(tag, None, "NAMESPACE completed"));
    }
}
