package dev.cibaservice.keycloak;

import java.util.ArrayList;
import java.util.List;

import org.jboss.logging.Logger;
import org.keycloak.models.AuthenticatedClientSessionModel;
import org.keycloak.models.ClientSessionContext;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.ProtocolMapperModel;
import org.keycloak.models.UserSessionModel;
import org.keycloak.protocol.oidc.mappers.AbstractOIDCProtocolMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAccessTokenMapper;
import org.keycloak.protocol.oidc.mappers.OIDCAttributeMapperHelper;
import org.keycloak.protocol.oidc.mappers.OIDCIDTokenMapper;
import org.keycloak.protocol.oidc.mappers.TokenIntrospectionTokenMapper;
import org.keycloak.provider.ProviderConfigProperty;
import org.keycloak.representations.IDToken;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;

/**
 * Copies one <em>client-session</em> note into a token claim, optionally parsed as JSON.
 *
 * <h2>Why this exists</h2>
 * In ciba_service's "keycloak mode" the service is Keycloak's CIBA HTTP authentication channel.
 * After the user approves with a passkey, the service calls Keycloak's
 * {@code /protocol/openid-connect/ext/ciba/auth/callback} with
 * {@code {"status":"SUCCEED","authorization_details":"[...]","approval":"{...}"}}. Keycloak keeps every
 * extra callback member as a string and, when the agent redeems its {@code auth_req_id}, stores it as a
 * client-session note named {@code ciba_callback_response_param_<member>} (see Keycloak's
 * {@code CibaGrantType#createUserSession}).
 * <p>
 * Keycloak 26 has no RFC 9396 ({@code authorization_details}) support for CIBA, and no released
 * protocol mapper reads <em>client-session</em> notes: the built-in "User Session Note" mapper reads
 * user-session notes, and its {@code jsonType.label=JSON} silently drops a value it cannot parse. This
 * mapper fills that gap, and is strict: with {@code parse.json=true} the note must be a JSON array or
 * object (no duplicate keys, nothing after the value); anything else omits the claim and logs a warning.
 * It never falls back to putting the raw string in the claim, because a resource server must never
 * see a string where it expects the approved structure.
 *
 * <h2>Configuration</h2>
 * <ul>
 *   <li>{@code session.note}: the client-session note name, e.g.
 *       {@code ciba_callback_response_param_authorization_details}</li>
 *   <li>{@code claim.name}: the token claim, e.g. {@code authorization_details}</li>
 *   <li>{@code parse.json}: {@code true} (default) to parse the note as a JSON array/object;
 *       {@code false} to copy it as a plain string</li>
 *   <li>the usual {@code access.token.claim}, {@code id.token.claim}, {@code introspection.token.claim}</li>
 * </ul>
 */
public class CibaSessionNoteJsonMapper extends AbstractOIDCProtocolMapper
        implements OIDCAccessTokenMapper, OIDCIDTokenMapper, TokenIntrospectionTokenMapper {

    public static final String PROVIDER_ID = "ciba-session-note-json-mapper";

    /** Config key: name of the client-session note to read. */
    public static final String SESSION_NOTE = "session.note";

    /** Config key: "true" to parse the note as a JSON array/object, "false" to copy the string. */
    public static final String PARSE_JSON = "parse.json";

    private static final Logger LOG = Logger.getLogger(CibaSessionNoteJsonMapper.class);

    /** Strict parser: duplicate object keys and trailing content are errors, not "last wins". */
    private static final ObjectMapper STRICT_JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    private static final List<ProviderConfigProperty> CONFIG_PROPERTIES = new ArrayList<>();

    static {
        ProviderConfigProperty note = new ProviderConfigProperty();
        note.setName(SESSION_NOTE);
        note.setLabel("Client session note");
        note.setHelpText("Name of the client-session note to copy, e.g. "
                + "ciba_callback_response_param_authorization_details (a CIBA callback parameter).");
        note.setType(ProviderConfigProperty.STRING_TYPE);
        note.setRequired(true);
        CONFIG_PROPERTIES.add(note);

        OIDCAttributeMapperHelper.addTokenClaimNameConfig(CONFIG_PROPERTIES);

        ProviderConfigProperty parse = new ProviderConfigProperty();
        parse.setName(PARSE_JSON);
        parse.setLabel("Parse as JSON");
        parse.setHelpText("Parse the note as a JSON array or object and put the structure in the claim. "
                + "Invalid JSON omits the claim (logged as a warning); it never falls back to a string.");
        parse.setType(ProviderConfigProperty.BOOLEAN_TYPE);
        parse.setDefaultValue("true");
        CONFIG_PROPERTIES.add(parse);

        OIDCAttributeMapperHelper.addIncludeInTokensConfig(CONFIG_PROPERTIES, CibaSessionNoteJsonMapper.class);
    }

    @Override
    public String getId() {
        return PROVIDER_ID;
    }

    @Override
    public String getDisplayCategory() {
        return TOKEN_MAPPER_CATEGORY;
    }

    @Override
    public String getDisplayType() {
        return "CIBA client session note (JSON)";
    }

    @Override
    public String getHelpText() {
        return "Map a client-session note (e.g. a CIBA callback parameter) to a token claim, parsed as JSON.";
    }

    @Override
    public List<ProviderConfigProperty> getConfigProperties() {
        return CONFIG_PROPERTIES;
    }

    @Override
    protected void setClaim(IDToken token, ProtocolMapperModel mappingModel, UserSessionModel userSession,
                            KeycloakSession keycloakSession, ClientSessionContext clientSessionCtx) {
        if (clientSessionCtx == null) {
            return;
        }
        AuthenticatedClientSessionModel clientSession = clientSessionCtx.getClientSession();
        String noteName = mappingModel.getConfig().get(SESSION_NOTE);
        if (clientSession == null || noteName == null || noteName.isBlank()) {
            return;
        }
        // The CLIENT-session note: CIBA callback parameters are stored there, not on the user session.
        Object value = claimValue(mappingModel.getName(), noteName, clientSession.getNote(noteName),
                isParseJson(mappingModel));
        if (value != null) {
            // No jsonType.label in our config, so the helper stores the value as is (a JsonNode here)
            // under claim.name, honouring nested claim names ("a.b") like the built-in mappers.
            OIDCAttributeMapperHelper.mapClaim(token, mappingModel, value);
        }
    }

    static boolean isParseJson(ProtocolMapperModel mappingModel) {
        String v = mappingModel.getConfig().get(PARSE_JSON);
        return v == null || Boolean.parseBoolean(v);
    }

    /**
     * The claim value for a raw note, or {@code null} to omit the claim.
     *
     * @param mapperName for the log message only
     * @param noteName   for the log message only
     * @param raw        the note value ({@code null} when the note is absent: claim omitted silently)
     * @param parseJson  {@code true}: a JSON array/object as a {@link JsonNode}, or {@code null} if it is
     *                   not one; {@code false}: the raw string
     */
    static Object claimValue(String mapperName, String noteName, String raw, boolean parseJson) {
        if (raw == null) {
            return null;
        }
        if (!parseJson) {
            return raw;
        }
        try {
            JsonNode node = STRICT_JSON.readTree(raw);
            if (node != null && node.isContainerNode()) {
                return node;
            }
            LOG.warnf("Mapper '%s': client-session note '%s' is not a JSON array or object; claim omitted",
                    mapperName, noteName);
        } catch (JsonProcessingException e) {
            // Log the parser's reason only, not the (possibly large, user-supplied) value.
            LOG.warnf("Mapper '%s': client-session note '%s' is not valid JSON (%s); claim omitted",
                    mapperName, noteName, e.getOriginalMessage());
        }
        return null;
    }
}
