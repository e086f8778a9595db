"""The SSH server side: authentication, routing, binding and relaying client channels."""
