//! What became of each carrier of sealed grants (the cookie, the `X-Capsign-Grants` header)
//! in a request, and when each is resealed.

/// What became of one carrier of sealed grants (the cookie or the header) in a request.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Carrier {
    /// The client sent it (the client uses this carrier).
    pub(super) sent: bool,
    /// It opened for this client.
    pub(super) opened: bool,
    /// It opened, was sealed by the signing key, and is younger than half the maximum age.
    pub(super) current: bool,
}

impl Carrier {
    pub(super) fn of<T>(sent: bool, opened: Option<&(T, bool)>) -> Carrier {
        Carrier {
            sent,
            opened: opened.is_some(),
            current: opened.is_some_and(|(_, current)| *current),
        }
    }
}

/// The two carriers of one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Carriers {
    pub(super) cookie: Carrier,
    pub(super) header: Carrier,
}

/// Which carriers get a new value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reseal {
    pub(super) cookie: bool,
    pub(super) header: bool,
}

impl Carriers {
    /// Both opened: the held set is their union, which neither holds alone.
    pub(super) fn both_opened(self) -> bool {
        self.cookie.opened && self.header.opened
    }

    /// A carrier the client uses gets a new value when the set `changed` or its value is not
    /// current; a client that sent neither gets both (it may keep either).
    pub(super) fn reseal(self, changed: bool) -> Reseal {
        let neither = !self.cookie.sent && !self.header.sent;
        let wants = |c: Carrier| (c.sent || neither) && (changed || !c.current);
        Reseal {
            cookie: wants(self.cookie),
            header: wants(self.header),
        }
    }
}
