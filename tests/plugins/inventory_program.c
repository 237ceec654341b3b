/* An executable for the inventory tests: the loader must refuse to map it as a plugin. */
int main(void)
{
	return 0;
}
