"""Single sign-on with an OpenID provider (docs/oidc.md): discovery, keys, ID tokens, the device
authorization grant, and the store of SSH keys bound to signed-in people."""
