/* cli.h - what the upager command's files share. */
#ifndef UPG_CLI_H
#define UPG_CLI_H

#define EXIT_USAGE 2

/* Verbs in run.c. */
int cmd_run(int argc, char **argv);
int cmd_stat(int argc, char **argv);

#endif
