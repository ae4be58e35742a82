#ifndef AGENTRY_CGIT2_SHIM_H
#define AGENTRY_CGIT2_SHIM_H

#include <git2.h>
#include <stdio.h>
#include <string.h>

/* git_libgit2_opts is variadic and cannot be called from Swift: one wrapper per option used. */

/* Blank the global, XDG and system config search paths so a user's ~/.gitconfig never leaks in. */
static inline int agentry_git_blank_config_search_paths(void) {
    int rc = git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_GLOBAL, "");
    if (rc != 0) return rc;
    rc = git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_XDG, "");
    if (rc != 0) return rc;
    return git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_SYSTEM, "");
}

/* Do not verify object hashes on read: trees and blobs come from our own object database. */
static inline int agentry_git_disable_strict_hash_verification(void) {
    return git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0);
}

/* Keep large trees in libgit2's object cache (by default only trees under 4 KiB are kept): a
 * folder of 10,000 agent files is a tree of half a megabyte, parsed again on every path lookup. */
static inline int agentry_git_cache_large_trees(void) {
    return git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_TREE, (size_t)(8 << 20));
}

/* Do not refuse repositories owned by another user (a service reading a repo a CI user checked out). */
static inline int agentry_git_set_owner_validation(int enabled) {
    return git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled);
}

/* Push and fetch need callbacks (C function pointers with a payload); kept here in C.
 * A remote-side rejection does not fail git_remote_push: it only shows in the
 * push_update_reference callback, which records it in `rejection`. */
typedef struct {
    char rejection[512];
    /* Credentials offered when the remote asks: an HTTPS token (as the password, with
     * `username`, else the URL's user, else x-access-token), else a key from ssh-agent. */
    const char *token;
    const char *username;
    int attempts;
    int asked;
} agentry_push_status;

/* Whether `url` is plain HTTP to this machine: its host (after any `user@`, up to the port, path
 * or end) is exactly 127.0.0.1, localhost or [::1]. `http://localhost@elsewhere/` and
 * `http://localhost.example/` are not. */
static inline int agentry_url_is_loopback_http(const char *url) {
    if (strncmp(url, "http://", 7) != 0) return 0;
    const char *authority = url + 7;
    size_t length = strcspn(authority, "/?#");
    const char *host = authority;
    for (size_t i = 0; i < length; i++) {
        if (authority[i] == '@') host = authority + i + 1;
    }
    size_t host_length = (size_t)(authority + length - host);
    const char *names[] = {"127.0.0.1", "localhost", "[::1]"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(names[i]);
        if (host_length >= n && strncmp(host, names[i], n) == 0 && (host_length == n || host[n] == ':')) return 1;
    }
    return 0;
}

static inline int agentry_credentials(
    git_credential **out, const char *url, const char *username_from_url, unsigned int allowed_types, void *payload) {
    agentry_push_status *status = (agentry_push_status *)payload;
    status->asked = 1;
    /* A credential the remote refused is not offered again and again. */
    if (status->attempts++ >= 2) return GIT_EAUTH;
    /* The token goes only over TLS, or to this machine itself (a test, a local mirror). */
    int protected_url = url && (strncmp(url, "https://", 8) == 0 || agentry_url_is_loopback_http(url));
    if ((allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT) && status->token && status->token[0] && protected_url) {
        const char *user = status->username && status->username[0] ? status->username
                           : (username_from_url && username_from_url[0] ? username_from_url : "x-access-token");
        return git_credential_userpass_plaintext_new(out, user, status->token);
    }
    if (allowed_types & GIT_CREDENTIAL_SSH_KEY) {
        return git_credential_ssh_key_from_agent(out, username_from_url && username_from_url[0] ? username_from_url : "git");
    }
    return GIT_PASSTHROUGH;
}

static inline int agentry_push_update_reference(const char *refname, const char *status, void *payload) {
    agentry_push_status *result = (agentry_push_status *)payload;
    if (status != NULL && result->rejection[0] == 0) {
        snprintf(result->rejection, sizeof(result->rejection), "%s: %s", refname, status);
    }
    return 0;
}

static inline int agentry_git_push(git_remote *remote, const char *refspec, agentry_push_status *status) {
    git_push_options options;
    git_push_options_init(&options, GIT_PUSH_OPTIONS_VERSION);
    options.callbacks.push_update_reference = agentry_push_update_reference;
    options.callbacks.credentials = agentry_credentials;
    options.callbacks.payload = status;
    /* A redirect could send the credentials to another host: none is followed. */
    options.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
    char *specs[1] = {(char *)refspec};
    git_strarray array = {specs, 1};
    return git_remote_push(remote, &array, &options);
}

static inline int agentry_git_fetch(git_remote *remote, const char *refspec, agentry_push_status *status) {
    git_fetch_options options;
    git_fetch_options_init(&options, GIT_FETCH_OPTIONS_VERSION);
    options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
    options.callbacks.credentials = agentry_credentials;
    options.callbacks.payload = status;
    options.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
    char *specs[1] = {(char *)refspec};
    git_strarray array = {specs, 1};
    return git_remote_fetch(remote, &array, &options, NULL);
}

#endif
