// Node's jose as an oracle for tests/test_interop.py. Reads one JSON request on stdin:
//   {"op": "verify", "token", "jwks", "alg", "issuer", "audience"}  -> {"payload", "header"}
//   {"op": "sign", "pkcs8_pem", "alg", "kid", "claims"}               -> {"token"}
// and writes one JSON answer on stdout ({"error": "..."} and exit 1 on failure).
import { createLocalJWKSet, jwtVerify, importPKCS8, SignJWT } from "jose";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

try {
  if (request.op === "verify") {
    const keys = createLocalJWKSet(request.jwks);
    const { payload, protectedHeader } = await jwtVerify(request.token, keys, {
      algorithms: [request.alg],
      issuer: request.issuer,
      audience: request.audience,
    });
    process.stdout.write(JSON.stringify({ payload, header: protectedHeader }));
  } else if (request.op === "sign") {
    const key = await importPKCS8(request.pkcs8_pem, request.alg);
    const token = await new SignJWT(request.claims)
      .setProtectedHeader({ alg: request.alg, kid: request.kid, typ: "JWT" })
      .sign(key);
    process.stdout.write(JSON.stringify({ token }));
  } else {
    throw new Error(`unknown op ${request.op}`);
  }
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error && error.message ? error.message : error) }));
  process.exit(1);
}
