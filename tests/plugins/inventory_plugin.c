/* A plugin for the inventory tests that calls into a library of its own (inventory_helper.c).
 *
 * Built as it is, it offers the v5 interface. With -DLEGACY_API it exports only
 * mosquitto_auth_plugin_version, the symbol of the v2 to v4 interface.
 */
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

int inventory_helper(void);

#ifdef LEGACY_API

int mosquitto_auth_plugin_version(void)
{
	return inventory_helper() > 0 ? 4 : -1;
}

#else

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data,
		struct mosquitto_opt *options, int option_count)
{
	(void)identifier;
	(void)user_data;
	(void)options;
	(void)option_count;
	return inventory_helper() > 0 ? MOSQ_ERR_SUCCESS : MOSQ_ERR_UNKNOWN;
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *options, int option_count)
{
	(void)user_data;
	(void)options;
	(void)option_count;
	return MOSQ_ERR_SUCCESS;
}

#endif
