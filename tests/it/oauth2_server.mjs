// Starts oauth2-mock-server (npm, 9.3.0) for the OAuth2 tests: a real token endpoint that
// issues RS256 JWTs, configured only through the library's own hooks. It checks the client's
// credentials (HTTP Basic for confidential clients; username and password for the password
// grant), gives tokens the lifetime TTL seconds, and prints the port, then one line per token
// it issues.
// Usage: node oauth2_server.mjs MODULE_PATH TTL CLIENT_ID CLIENT_SECRET USERNAME PASSWORD
const [modPath, ttlArg, clientId, clientSecret, username, password] = process.argv.slice(2);
const ttl = Number(ttlArg);
const { OAuth2Server } = await import(modPath);
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
server.service.on("beforeTokenSigning", (token) => {
  token.payload.exp = token.payload.iat + ttl;
  // Two tokens issued within one second would otherwise be identical (RS256 is
  // deterministic and the claims count whole seconds); real servers set a jti too.
  token.payload.jti = crypto.randomUUID();
});
server.service.on("beforeResponse", (response, req) => {
  const body = req.body ?? {};
  const auth = req.headers.authorization ?? "";
  let ok;
  if (body.grant_type === "client_credentials") {
    // RFC 6749 §2.3.1: id and secret are form-encoded before they are joined by ":".
    const basic = auth.startsWith("Basic ")
      ? Buffer.from(auth.slice(6), "base64").toString()
      : "";
    const [id, secret] = basic.split(":").map((p) => decodeURIComponent(p.replace(/\+/g, " ")));
    ok = id === clientId && secret === clientSecret;
  } else if (body.grant_type === "password") {
    ok = body.client_id === clientId && body.username === username && body.password === password;
  }
  if (!ok) {
    response.statusCode = 401;
    response.body = { error: "invalid_client", error_description: "unknown client or bad credentials" };
    return;
  }
  response.body.expires_in = ttl;
  console.log(`issued ${body.grant_type} scope=${body.scope ?? ""}`);
});
await server.start(0, "127.0.0.1");
// Tokens name the issuer by the address clients use (the default says "localhost").
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(server.address().port);
