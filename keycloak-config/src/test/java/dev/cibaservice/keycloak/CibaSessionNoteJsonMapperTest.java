package dev.cibaservice.keycloak;

import java.lang.reflect.Proxy;
import java.util.HashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.keycloak.models.AuthenticatedClientSessionModel;
import org.keycloak.models.ClientSessionContext;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.protocol.oidc.mappers.OIDCAttributeMapperHelper;
import org.keycloak.representations.AccessToken;
import org.keycloak.util.JsonSerialization;

import com.fasterxml.jackson.databind.JsonNode;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Unit tests of the parse/claim logic, without a running Keycloak: the client session and its
 * context are tiny dynamic proxies that only answer {@code getNote} / {@code getClientSession}.
 */
class CibaSessionNoteJsonMapperTest {

    private static final String NOTE = "ciba_callback_response_param_authorization_details";
    private static final String DETAILS =
            "[{\"type\":\"iam_policy\",\"actions\":[\"update\"],\"identifier\":\"policy-42\",\"n\":1}]";

    private static ProtocolMapperModel model(String claim, String parseJson) {
        ProtocolMapperModel m = new ProtocolMapperModel();
        m.setName("test " + claim);
        m.setProtocol("openid-connect");
        m.setProtocolMapper(CibaSessionNoteJsonMapper.PROVIDER_ID);
        Map<String, String> cfg = new HashMap<>();
        cfg.put(CibaSessionNoteJsonMapper.SESSION_NOTE, NOTE);
        cfg.put(OIDCAttributeMapperHelper.TOKEN_CLAIM_NAME, claim);
        if (parseJson != null) {
            cfg.put(CibaSessionNoteJsonMapper.PARSE_JSON, parseJson);
        }
        cfg.put(OIDCAttributeMapperHelper.INCLUDE_IN_ACCESS_TOKEN, "true");
        m.setConfig(cfg);
        return m;
    }

    /** A ClientSessionContext whose client session has exactly the given notes. */
    private static ClientSessionContext contextWithNotes(Map<String, String> notes) {
        AuthenticatedClientSessionModel clientSession = (AuthenticatedClientSessionModel) Proxy.newProxyInstance(
                CibaSessionNoteJsonMapperTest.class.getClassLoader(),
                new Class<?>[] {AuthenticatedClientSessionModel.class},
                (proxy, method, args) -> {
                    if (method.getName().equals("getNote")) {
                        return notes.get((String) args[0]);
                    }
                    throw new UnsupportedOperationException(method.getName());
                });
        return (ClientSessionContext) Proxy.newProxyInstance(
                CibaSessionNoteJsonMapperTest.class.getClassLoader(),
                new Class<?>[] {ClientSessionContext.class},
                (proxy, method, args) -> {
                    if (method.getName().equals("getClientSession")) {
                        return clientSession;
                    }
                    throw new UnsupportedOperationException(method.getName());
                });
    }

    private static AccessToken map(ProtocolMapperModel model, Map<String, String> notes) {
        AccessToken token = new AccessToken();
        new CibaSessionNoteJsonMapper().setClaim(token, model, null, null, contextWithNotes(notes));
        return token;
    }

    @Test
    void arrayNoteBecomesStructuredClaim() throws Exception {
        AccessToken token = map(model("authorization_details", "true"), Map.of(NOTE, DETAILS));

        Object claim = token.getOtherClaims().get("authorization_details");
        assertTrue(claim instanceof JsonNode && ((JsonNode) claim).isArray(), "claim is a JSON array");

        // What a resource server sees after Keycloak serializes the token: a real array, not a string.
        JsonNode serialized = JsonSerialization.readValue(JsonSerialization.writeValueAsString(token), JsonNode.class);
        assertEquals(JsonSerialization.readValue(DETAILS, JsonNode.class), serialized.get("authorization_details"));
        assertEquals(1, serialized.get("authorization_details").get(0).get("n").intValue(), "numbers stay numbers");
    }

    @Test
    void objectNoteBecomesStructuredClaim() throws Exception {
        String approval = "{\"receipt\":\"r-1\",\"challenge_sha256\":\"abc\",\"uv\":true}";
        AccessToken token = map(model("approval", null /* default: parse */), Map.of(NOTE, approval));

        JsonNode serialized = JsonSerialization.readValue(JsonSerialization.writeValueAsString(token), JsonNode.class);
        assertTrue(serialized.get("approval").isObject());
        assertTrue(serialized.get("approval").get("uv").booleanValue());
    }

    @Test
    void nestedClaimNameIsHonoured() throws Exception {
        AccessToken token = map(model("ciba.authorization_details", "true"), Map.of(NOTE, DETAILS));
        JsonNode serialized = JsonSerialization.readValue(JsonSerialization.writeValueAsString(token), JsonNode.class);
        assertTrue(serialized.get("ciba").get("authorization_details").isArray());
    }

    @Test
    void invalidJsonOmitsTheClaimWithoutStringFallback() {
        for (String bad : new String[] {
                "[{\"type\":", // truncated
                "not json",
                "",
                "[1] trailing", // content after the value
                "{\"a\":1,\"a\":2}", // duplicate key: ambiguous, refused
                "\"a string\"", // valid JSON but not a structure
                "42",
                "null",
        }) {
            AccessToken token = map(model("authorization_details", "true"), Map.of(NOTE, bad));
            assertFalse(token.getOtherClaims().containsKey("authorization_details"), "omitted for: " + bad);
        }
    }

    @Test
    void absentNoteOmitsTheClaim() {
        AccessToken token = map(model("authorization_details", "true"), Map.of());
        assertFalse(token.getOtherClaims().containsKey("authorization_details"));
        assertNull(CibaSessionNoteJsonMapper.claimValue("m", NOTE, null, true));
    }

    @Test
    void parseJsonFalseCopiesTheString() {
        AccessToken token = map(model("authorization_details_raw", "false"), Map.of(NOTE, DETAILS));
        assertEquals(DETAILS, token.getOtherClaims().get("authorization_details_raw"));
    }

    @Test
    void providerMetadata() {
        CibaSessionNoteJsonMapper mapper = new CibaSessionNoteJsonMapper();
        assertEquals("ciba-session-note-json-mapper", mapper.getId());
        assertEquals("openid-connect", mapper.getProtocol());
        assertTrue(mapper.getConfigProperties().stream().anyMatch(p -> p.getName().equals("session.note")));
        assertTrue(mapper.getConfigProperties().stream().anyMatch(p -> p.getName().equals("claim.name")));
        assertTrue(mapper.getConfigProperties().stream().anyMatch(p -> p.getName().equals("parse.json")));
        assertTrue(mapper.getConfigProperties().stream().anyMatch(p -> p.getName().equals("access.token.claim")));
    }
}
