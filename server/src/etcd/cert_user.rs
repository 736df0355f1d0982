//! The user a client certificate proves: with authentication on, etcd takes a verified
//! client certificate's common name as the user when a request carries no token. The
//! client port's outermost layer ([`CertUserLayer`]) removes [`HEADER`] from every request
//! and sets it from the connection's verified certificate only, so no client can name a user
//! it has not proved; members relaying a request for such a caller pass the header on, over
//! the peer port's member-only calls.
//!
//! Inside the member the user travels as a token no header can carry (it starts with a NUL).

use std::task::{Context, Poll};

use super::client_conn::ClientIdentity;

/// The header carrying a certificate's user.
pub const HEADER: &str = "x-quorumkv-certificate-user";

/// What marks a token as a certificate's user rather than a simple token.
const PREFIX: &str = "\0cn:";

/// The in-member token standing for certificate user `user`.
pub fn token_of(user: &str) -> String {
    format!("{PREFIX}{user}")
}

/// The certificate user a token stands for, if it is one.
pub fn user_of(token: &str) -> Option<&str> {
    token.strip_prefix(PREFIX)
}

/// Sets [`HEADER`] from the connection's certificate, and from nothing else.
#[derive(Debug, Clone, Copy)]
pub struct CertUserLayer;

impl<S> tower::Layer<S> for CertUserLayer {
    type Service = CertUser<S>;

    fn layer(&self, inner: S) -> CertUser<S> {
        CertUser(inner)
    }
}

/// See [`CertUserLayer`].
#[derive(Debug, Clone)]
pub struct CertUser<S>(S);

impl<S, B> tower::Service<http::Request<B>> for CertUser<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        req.headers_mut().remove(HEADER);
        let cn = req
            .extensions()
            .get::<ClientIdentity>()
            .and_then(|i| i.common_name.clone());
        if let Some(v) = cn.and_then(|cn| http::HeaderValue::from_str(&cn).ok()) {
            req.headers_mut().insert(HEADER, v);
        }
        self.0.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_header_makes_a_certificate_token() {
        // A header value cannot hold a NUL: a client cannot send the in-member form.
        assert!(http::HeaderValue::from_str(&token_of("root")).is_err());
        assert_eq!(user_of(&token_of("root")), Some("root"));
        assert_eq!(user_of("root"), None);
    }
}
