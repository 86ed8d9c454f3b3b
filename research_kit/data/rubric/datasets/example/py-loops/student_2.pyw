def print_table(n):
    total = 0
    for i in range(1, 11):
        product = n * i
        print(n, "x", i, "=", product)
        total = total + product
    print("total is", total)


num = int(input("Enter a number: "))
print_table(num)
