#ifndef AGENTRY_CGIT2_SHIM_H
#define AGENTRY_CGIT2_SHIM_H

#include <git2.h>

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

/* Do not refuse repositories owned by another user (a service reading a repo a CI user checked out). */
static inline int agentry_git_set_owner_validation(int enabled) {
    return git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled);
}

#endif
