#!/usr/bin/perl

# The unit tests of the core are a C program that speaks TAP.

use strict;
use warnings;
use FindBin;

my $bin = ($ENV{LLMR_BUILD} // "$FindBin::Bin/../build") . '/t/core';

unless (-x $bin) {
    print "Bail out! $bin is not built: run make unit\n";
    exit 1;
}

exec $bin or die "cannot run $bin: $!\n";
