# Times table: prints the table for a chosen number and the sum of its products.


def times_table_row(number, multiplier):
    """Return one line of the table, e.g. '3 x 4 = 12'."""
    return f"{number} x {multiplier} = {number * multiplier}"


def sum_of_products(number, last=10):
    """Add up number*1 + number*2 + ... + number*last."""
    total = 0
    for multiplier in range(1, last + 1):
        total += number * multiplier
    return total


number = int(input("Which times table? "))
for multiplier in range(1, 11):
    print(times_table_row(number, multiplier))
print("Sum of the products:", sum_of_products(number))
